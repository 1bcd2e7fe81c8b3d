/**
 * Emulated devices for kvmts virtual machines, and the buses that route guest port and
 * MMIO accesses to them.
 * @module
 */

// The buses, the 8259A pair, the I/O APIC and the 8254 live in kvm-core, which also runs them
// as its in-kernel irqchip and PIT; they are re-exported here for VMMs that run them in user space.
export { BusError, IO_PORT_COUNT, IoBus, MMIO_ADDR_LIMIT, MmioBus } from '@kvmts/kvm-core';
export type { BusDevice, BusErrorKind, BusRange } from '@kvmts/kvm-core';
export {
  COM1_BASE,
  COM1_IRQ,
  COM2_BASE,
  COM2_IRQ,
  COM3_BASE,
  COM4_BASE,
  SERIAL_FIFO_SIZE,
  SERIAL_PORT_LEN,
  Serial,
} from './legacy/serial.js';
export type { SerialOptions, SerialState } from './legacy/serial.js';
export { DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, DebugExit } from './legacy/debug-exit.js';
export type { DebugExitState } from './legacy/debug-exit.js';
export {
  PCI_BAR0,
  PCI_CACHE_LINE_SIZE,
  PCI_CAPABILITY_LIST,
  PCI_CLASS_CODE,
  PCI_COMMAND,
  PCI_COMMAND_BUS_MASTER,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_CONFIG_SPACE_SIZE,
  PCI_DEVICE_ID,
  PCI_HEADER_TYPE,
  PCI_INTA,
  PCI_INTB,
  PCI_INTC,
  PCI_INTD,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_LATENCY_TIMER,
  PCI_REVISION_ID,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STATUS_INTERRUPT,
  PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_VENDOR_ID,
  PciConfigSpace,
} from './pci/device.js';
export type { PciBarInfo, PciBarKind, PciBarOptions, PciConfigState, PciDevice, PciHeader } from './pci/device.js';
export {
  PCI_CONFIG_ADDRESS_PORT,
  PCI_CONFIG_DATA_LEN,
  PCI_CONFIG_DATA_PORT,
  PCI_FUNCTIONS,
  PCI_SLOTS,
  PciHostBridge,
} from './pci/host-bridge.js';
export type { PciHostBridgeState, PciSlot } from './pci/host-bridge.js';
export { PIIX_PIRQRC, PIIX_RESET_CONTROL_PORT, PIIX_SLOT, Piix3, pirqForIntx } from './pci/piix.js';
export type { Piix3Options, Piix3State, PiixIntxSource } from './pci/piix.js';
export {
  ACPI_SLP_TYP_S5,
  AcpiPm,
  PM1_PWRBTN_EN,
  PM1_GBL_EN,
  PM1_RTC_EN,
  PM1_PWRBTN_STS,
  PM1_SCI_EN,
  PM1_SLP_EN,
  PM1_TMR_EN,
  PM1_TMR_STS,
  PM1_WAK_STS,
  PM_BASE_DEFAULT,
  PM_IO_LEN,
  PM_RESET_VALUE,
  PM_TIMER_BITS,
  PM_TIMER_HZ,
  pmLayout,
  pmTimerTicks,
} from './acpi/pm.js';
export type { AcpiPmOptions, AcpiPmState, PmLayout, PmRegister } from './acpi/pm.js';
export { PIC_CASCADE_IRQ, PIC_ELCR_BASE, PIC_MASTER_BASE, PIC_PORT_LEN, PIC_SLAVE_BASE, Pic } from '@kvmts/kvm-core';
export type { PicChipState, PicOptions, PicState } from '@kvmts/kvm-core';
export { IOAPIC_BASE, IOAPIC_PINS, IOAPIC_SIZE, IOAPIC_VERSION, IoApic, IoApicDeliveryMode } from '@kvmts/kvm-core';
export type { IoApicMessage, IoApicOptions, IoApicRedirection, IoApicState } from '@kvmts/kvm-core';
export { I8042, I8042_AUX_IRQ, I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_KBD_IRQ, PS2_QUEUE_SIZE } from './legacy/i8042.js';
export type { I8042Options, I8042State, Ps2KeyboardState, Ps2MouseState } from './legacy/i8042.js';
export { PIT_BASE, PIT_FREQ_HZ, PIT_IRQ, PIT_PORT_LEN, Pit, pitTickNs, pitTicksAt } from '@kvmts/kvm-core';
export type { PitChannelState, PitOptions, PitRunState, PitState } from '@kvmts/kvm-core';
export { PORT61_PORT, Port61 } from '@kvmts/kvm-core';
export type { Port61Options, Port61State } from '@kvmts/kvm-core';
export { RTC_BASE, RTC_CENTURY_INDEX, RTC_CMOS_SIZE, RTC_IRQ, RTC_PORT_LEN, Rtc } from './legacy/rtc.js';
export type { RtcOptions, RtcState, RtcTime } from './legacy/rtc.js';
export { PORT92_PORT, Port92 } from './legacy/port92.js';
export type { Port92Options, Port92State } from './legacy/port92.js';
export { PORT80_PORT, Port80 } from './legacy/port80.js';
export type { Port80Options, Port80State } from './legacy/port80.js';
export { FW_CFG_FEATURE_TRADITIONAL, FW_CFG_MAX_FILE_PATH, FW_CFG_PORT, FW_CFG_PORT_LEN, FwCfg, FwCfgKey, fwCfgE820, fwCfgU32 } from './fw-cfg/fw-cfg.js';
export type { FwCfgE820Entry, FwCfgOptions, FwCfgState } from './fw-cfg/fw-cfg.js';
export { LoaderZone, TableLoader } from './fw-cfg/table-loader.js';
