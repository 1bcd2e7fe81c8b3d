/**
 * Kernel modules: names, dependencies (from `modules.dep` or from each module's `.modinfo`
 * section) and the order to load them in.
 * @module
 */

/**
 * The kernel's name for a module file or module: the file name without directory and
 * `.ko[.xz|.zst|.gz]`, with `-` turned into `_` (`virtio-rng.ko` is module `virtio_rng`).
 */
export function moduleName(pathOrName: string): string {
  const base = pathOrName.slice(pathOrName.lastIndexOf('/') + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

/** Direct (or transitive) dependencies of each module, by {@link moduleName}. */
export type ModuleDeps = ReadonlyMap<string, readonly string[]>;

/**
 * Parse `modules.dep` as written by depmod: one line per module,
 * `kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko ...`. Returns the
 * dependencies of each module by name, and where each module's file is (relative path).
 */
export function parseModulesDep(text: string): { deps: Map<string, string[]>; files: Map<string, string> } {
  const deps = new Map<string, string[]>();
  const files = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new SyntaxError(`modules.dep: bad line '${line}'`);
    const file = line.slice(0, colon).trim();
    const name = moduleName(file);
    const rest = line.slice(colon + 1).trim();
    files.set(name, file);
    deps.set(name, rest === '' ? [] : rest.split(/\s+/).map(moduleName));
  }
  return { deps, files };
}

/**
 * Modules to load, dependencies first: a depth-first walk from each wanted module in turn,
 * each module listed once, after everything it depends on. `depsOf` returns a module's
 * dependencies, or undefined when there is no such module. Throws an Error naming the
 * module that is missing (and who needs it) or the cycle.
 */
export function resolveLoadOrder(wanted: readonly string[], depsOf: (name: string) => readonly string[] | undefined): string[] {
  const order: string[] = [];
  const done = new Set<string>();
  const active: string[] = [];
  const visit = (name: string, neededBy: string | undefined): void => {
    if (done.has(name)) return;
    const loop = active.indexOf(name);
    if (loop >= 0) throw new Error(`module dependency cycle: ${[...active.slice(loop), name].join(' -> ')}`);
    const deps = depsOf(name);
    if (deps === undefined) {
      throw new Error(neededBy === undefined ? `module ${name} not found` : `module ${name} (needed by ${neededBy}) not found`);
    }
    active.push(name);
    for (const d of deps) visit(moduleName(d), name);
    active.pop();
    done.add(name);
    order.push(name);
  };
  for (const w of wanted) visit(moduleName(w), undefined);
  return order;
}

/**
 * The `key=value` strings of an ELF kernel module's `.modinfo` section (for example
 * `depends=virtio,virtio_ring`, `name=virtio_pci`). Reads ELF32 and ELF64, either byte
 * order. Throws SyntaxError if `elf` is not an ELF file or has no `.modinfo` section.
 */
export function readModinfo(elf: Uint8Array): Map<string, string[]> {
  if (elf.length < 52 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) {
    throw new SyntaxError('not an ELF file');
  }
  const is64 = elf[4] === 2;
  if (elf[4] !== 1 && elf[4] !== 2) throw new SyntaxError('unknown ELF class');
  const le = elf[5] === 1;
  const dv = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const u16 = (o: number): number => dv.getUint16(o, le);
  const u32 = (o: number): number => dv.getUint32(o, le);
  const word = (o: number): number => (is64 ? Number(dv.getBigUint64(o, le)) : u32(o));
  const shoff = word(is64 ? 0x28 : 0x20);
  const shentsize = u16(is64 ? 0x3a : 0x2e);
  const shnum = u16(is64 ? 0x3c : 0x30);
  const shstrndx = u16(is64 ? 0x3e : 0x32);
  if (shoff === 0 || shoff + shnum * shentsize > elf.length || shstrndx >= shnum) {
    throw new SyntaxError('bad ELF section header table');
  }
  const section = (i: number): { name: number; offset: number; size: number } => {
    const base = shoff + i * shentsize;
    return {
      name: u32(base),
      offset: word(base + (is64 ? 0x18 : 0x10)),
      size: word(base + (is64 ? 0x20 : 0x14)),
    };
  };
  const strtab = section(shstrndx);
  const cstring = (at: number): string => {
    let end = at;
    while (end < elf.length && elf[end] !== 0) end++;
    return Buffer.from(elf.subarray(at, end)).toString('latin1');
  };
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (cstring(strtab.offset + s.name) !== '.modinfo') continue;
    if (s.offset + s.size > elf.length) throw new SyntaxError('.modinfo section runs past the end of the file');
    const info = new Map<string, string[]>();
    for (const item of Buffer.from(elf.subarray(s.offset, s.offset + s.size)).toString('latin1').split('\0')) {
      const eq = item.indexOf('=');
      if (eq <= 0) continue;
      const key = item.slice(0, eq);
      const list = info.get(key) ?? [];
      list.push(item.slice(eq + 1));
      info.set(key, list);
    }
    return info;
  }
  throw new SyntaxError('no .modinfo section (not a kernel module?)');
}

/** The modules a module's `.modinfo` says it depends on (`depends=a,b`; may be empty). */
export function modinfoDepends(info: ReadonlyMap<string, readonly string[]>): string[] {
  const value = info.get('depends')?.[0] ?? '';
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '').map(moduleName);
}
