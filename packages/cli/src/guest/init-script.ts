/**
 * The guest's `/init`: a busybox `sh` script that loads the virtio modules, reports what the
 * guest sees on the console in fixed `GUEST-…` lines and powers off.
 *
 * Lines, in order (see the guest README):
 * - `GUEST-WARN insmod <module> failed` for a module that did not load
 * - `GUEST-BOOT-OK uptime=<s> kernel=<release>`
 * - the CPU's `model name\t: …` line from /proc/cpuinfo
 * - `GUEST-INFO cpus=<n> MemTotal: <kB> kB`
 * - `GUEST-VIRTIO <dev> device=0x000N (<kind>) vendor=<id> driver=<driver|none>` per virtio device
 * - `GUEST-VIRTIO-COUNT <n>`
 * - with `guest.debug=1`: `GUEST-DEBUG module <name> refs=<n>` and
 *   `GUEST-DEBUG pci <slot> <vendor>:<device> class=<c> irq=<n> driver=<driver|none>`
 * - `GUEST-BLK vda sectors=<n> sig=<first 32 bytes, only [A-Za-z0-9-]>` if /dev/vda exists
 * - `GUEST-NET <nic> mac=<mac> driver=<driver>` per NIC other than lo; with `guest.dhcp=1`,
 *   udhcpc's output follows as `GUEST-DHCP …` lines
 * - `GUEST-HVC hvc0 present`, `GUEST-VPORT /dev/vportNpM`, `GUEST-BALLOON driver-registered`
 *   when those exist
 * - `GUEST-DONE uptime=<s>`
 * - with `guest.shell=1`: `GUEST-SHELL ready`, then a shell on the console (for people and for
 *   tests that type commands); the steps below follow when it exits
 * then `poweroff -f`, or `reboot -f` with `guest.reboot=1`.
 * @module
 */

/** Where /init finds the modules and the order to load them in (one name per line). */
export const MODULE_DIR = 'lib/modules';
export const LOAD_ORDER_FILE = `${MODULE_DIR}/load-order`;

/** The script, installed as `/init` with mode 0755. */
export const INIT_SCRIPT = `#!/bin/sh
# /init of the kvmts Debian i386 guest, written by 'kvmts guest fetch'.
# Reports on the console (boot with console=ttyS0) and powers off.
# Kernel command line flags: guest.debug=1 (modules, PCI), guest.dhcp=1 (udhcpc per NIC),
# guest.shell=1 (a shell on the console before the end), guest.reboot=1 (reboot, not power off).
PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

read -r CMDLINE </proc/cmdline
flag() { # flag NAME: is NAME=1 a word of the kernel command line?
  case " $CMDLINE " in *" $1=1 "*) return 0 ;; esac
  return 1
}
uptime_s() {
  read -r up idle </proc/uptime
  echo "$up"
}
driver_of() { # driver_of SYSFS-DIR: name of the bound driver, or "none"
  if [ -e "$1/driver" ]; then basename "$(readlink "$1/driver")"; else echo none; fi
}

while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "/${MODULE_DIR}/$mod.ko" || echo "GUEST-WARN insmod $mod failed"
done </${LOAD_ORDER_FILE}

echo "GUEST-BOOT-OK uptime=$(uptime_s) kernel=$(uname -r)"
grep -m1 '^model name' /proc/cpuinfo

cpus=0
while read -r key rest; do
  [ "$key" = processor ] && cpus=$((cpus + 1))
done </proc/cpuinfo
while read -r key value unit; do
  [ "$key" = MemTotal: ] && mem="$key $value $unit"
done </proc/meminfo
echo "GUEST-INFO cpus=$cpus $mem"

# A virtio disk's gendisk can show up a little after its driver binds: wait up to 2 s.
has_virtio_blk=0
for id in /sys/bus/virtio/devices/*/device; do
  [ -e "$id" ] && [ "$(cat "$id")" = 0x0002 ] && has_virtio_blk=1
done
tries=0
while [ "$has_virtio_blk" = 1 ] && [ ! -e /sys/block/vda ] && [ "$tries" -lt 20 ]; do
  sleep 0.1
  tries=$((tries + 1))
done

count=0
for dev in /sys/bus/virtio/devices/*; do
  [ -e "$dev" ] || continue
  count=$((count + 1))
  id=$(cat "$dev/device")
  case "$id" in
    0x0001) kind=net ;;
    0x0002) kind=block ;;
    0x0003) kind=console ;;
    0x0004) kind=rng ;;
    0x0005) kind=balloon ;;
    0x0008) kind=scsi ;;
    0x0009) kind=9p ;;
    0x0010) kind=gpu ;;
    0x0012) kind=input ;;
    0x0013) kind=vsock ;;
    *) kind=other ;;
  esac
  echo "GUEST-VIRTIO \${dev##*/} device=$id ($kind) vendor=$(cat "$dev/vendor") driver=$(driver_of "$dev")"
done
echo "GUEST-VIRTIO-COUNT $count"

if flag guest.debug; then
  while read -r name size refs rest; do
    echo "GUEST-DEBUG module $name refs=$refs"
  done </proc/modules
  for pci in /sys/bus/pci/devices/*; do
    [ -e "$pci" ] || continue
    echo "GUEST-DEBUG pci \${pci##*/} $(cat "$pci/vendor"):$(cat "$pci/device") class=$(cat "$pci/class") irq=$(cat "$pci/irq") driver=$(driver_of "$pci")"
  done
fi

if [ -b /dev/vda ]; then
  sig=$(dd if=/dev/vda bs=32 count=1 2>/dev/null | tr -cd 'A-Za-z0-9-')
  echo "GUEST-BLK vda sectors=$(cat /sys/block/vda/size) sig=$sig"
fi

for nic in /sys/class/net/*; do
  name=\${nic##*/}
  [ -e "$nic" ] && [ "$name" != lo ] || continue
  ip link set "$name" up 2>/dev/null
  drv=
  [ -e "$nic/device/driver" ] && drv=$(basename "$(readlink "$nic/device/driver")")
  echo "GUEST-NET $name mac=$(cat "$nic/address") driver=$drv"
  if flag guest.dhcp; then
    udhcpc -i "$name" -n -q -t 3 -T 1 -s /bin/true 2>&1 | while read -r line; do echo "GUEST-DHCP $line"; done
  fi
done

[ -e /dev/hvc0 ] && echo "GUEST-HVC hvc0 present"
for port in /dev/vport*; do
  [ -e "$port" ] && echo "GUEST-VPORT $port"
done
[ -e /sys/bus/virtio/drivers/virtio_balloon ] && echo "GUEST-BALLOON driver-registered"

echo "GUEST-DONE uptime=$(uptime_s)"
if flag guest.shell; then
  echo "GUEST-SHELL ready"
  sh
fi
sync
if flag guest.reboot; then reboot -f; fi
poweroff -f
# No way to power off: stay here rather than let init exit (a kernel panic).
while :; do sleep 3600; done
`;

/**
 * Busybox applets linked in /bin: what /init uses, and a few more for a shell on the console.
 */
export const BUSYBOX_APPLETS: readonly string[] = [
  'ash', 'awk', 'basename', 'cat', 'cut', 'date', 'dd', 'dirname', 'dmesg', 'echo', 'false',
  'find', 'free', 'grep', 'halt', 'head', 'hexdump', 'ifconfig', 'insmod', 'ip', 'ls', 'lsmod',
  'md5sum', 'mkdir', 'mknod', 'mount', 'nc', 'od', 'ping', 'poweroff', 'printf', 'readlink', 'reboot',
  'rmmod', 'sed', 'sh', 'sleep', 'sort', 'stat', 'sync', 'tail', 'tr', 'true', 'udhcpc', 'umount',
  'uname', 'uptime', 'wc',
];

/** The /init script and the busybox applet links: part of the initramfs recipe (initramfs.ts). */
export const INIT_SCRIPT_RECIPE = `${INIT_SCRIPT}\n# busybox applets: ${BUSYBOX_APPLETS.join(' ')}\n`;
