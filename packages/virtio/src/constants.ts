/**
 * Numbers from the VirtIO 1.2 specification shared by every transport and device: device
 * status bits (2.1), reserved feature bits (6), device type IDs (5) and interrupt causes.
 * @module
 */

// Device status field (2.1). The driver sets bits in this order during initialisation (3.1.1).
/** The guest OS has noticed the device. */
export const VIRTIO_STATUS_ACKNOWLEDGE = 0x01;
/** The guest OS knows how to drive the device. */
export const VIRTIO_STATUS_DRIVER = 0x02;
/** The driver is set up and ready to drive the device. */
export const VIRTIO_STATUS_DRIVER_OK = 0x04;
/** The driver has acknowledged the features it understands; negotiation is complete. */
export const VIRTIO_STATUS_FEATURES_OK = 0x08;
/** Set by the device: it hit an error it cannot recover from until the driver resets it. */
export const VIRTIO_STATUS_DEVICE_NEEDS_RESET = 0x40;
/** The driver has given up on the device. */
export const VIRTIO_STATUS_FAILED = 0x80;

// Reserved (transport and ring) feature bits, as bit numbers (6).
/** Descriptors may point to indirect descriptor tables. */
export const VIRTIO_F_RING_INDIRECT_DESC = 28;
/** used_event / avail_event fields suppress notifications. */
export const VIRTIO_F_RING_EVENT_IDX = 29;
/** Compliance with VirtIO 1.0 and later; a modern device refuses drivers that do not ack it. */
export const VIRTIO_F_VERSION_1 = 32;
/** The device accesses memory through an IOMMU (not offered). */
export const VIRTIO_F_ACCESS_PLATFORM = 33;
/** Packed virtqueue layout (not offered). */
export const VIRTIO_F_RING_PACKED = 34;

/** A feature bit number as a 64-bit mask. */
export const featureBit = (bit: number): bigint => 1n << BigInt(bit);

/** Feature bits the transports offer on behalf of every device. */
export const TRANSPORT_FEATURES = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_RING_INDIRECT_DESC) | featureBit(VIRTIO_F_RING_EVENT_IDX);

// Device types (5).
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;
export const VIRTIO_ID_BALLOON = 5;

/** Vendor ID the transports report (the virtio PCI vendor, also used for virtio-mmio). */
export const VIRTIO_VENDOR_ID = 0x1af4;

// Interrupt causes, as in the MMIO InterruptStatus register and the PCI ISR byte.
/** A queue has new used buffers. */
export const VIRTIO_INT_USED_BUFFER = 0x1;
/** The device configuration has changed (or the device needs a reset). */
export const VIRTIO_INT_CONFIG_CHANGE = 0x2;
