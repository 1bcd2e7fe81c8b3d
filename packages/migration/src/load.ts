/**
 * Loading a stream into a fresh machine: configuration check, RAM as it arrives, and the
 * device/vCPU state only after the whole stream (END included) has been read and verified.
 * @module
 */
import { checkConfig, describeMachine, validateConfig, type MachineConfig } from './config.js';
import { MigrationError } from './errors.js';
import type { MigratableMachine } from './persist.js';
import { applyState, validateState, type MachineState } from './state.js';
import { parseJson } from './stream/frame.js';
import { Section, sectionName, type Frame } from './stream/format.js';
import { applyRamSection, emptyRamStats, type RamStats } from './stream/ram.js';
import type { StreamReader } from './stream/reader.js';

/** The destination machine, or how to build it from the stream's configuration. */
export type LoadTarget<M extends MigratableMachine> = M | ((config: MachineConfig) => M | Promise<M>);

/** What {@link loadStream} read. */
export interface Loaded<M extends MigratableMachine> {
  machine: M;
  config: MachineConfig;
  state: MachineState;
  ram: RamStats;
  /** Stream bytes read. */
  bytes: number;
  /** ROUND markers seen. */
  rounds: number;
}

/** Progress hooks of {@link loadStream}. */
export interface LoadHooks {
  onRound?(round: number): void;
}

export function ramPagesOf(s: RamStats): number {
  return s.zeroPages + s.rawPages + s.xbzrlePages + s.deflatePages;
}

/** Reads and checks the CONFIG section (the first one). */
export async function readConfig(reader: StreamReader): Promise<MachineConfig> {
  const first = await reader.expect('before its CONFIG section');
  if (first.type !== Section.Config) {
    throw new MigrationError('protocol', `corrupt stream: the first section is ${sectionName(first.type)}, expected CONFIG`);
  }
  return validateConfig(parseJson(first));
}

/**
 * Reads a whole stream into a machine that is not running. The machine is paused before
 * anything is written into it and left paused; on any error a machine built here (target
 * given as a function) is closed, and the error is thrown: nothing of a partial stream is
 * ever run.
 */
export async function loadStream<M extends MigratableMachine>(reader: StreamReader, target: LoadTarget<M>, hooks: LoadHooks = {}): Promise<Loaded<M>> {
  const config = await readConfig(reader);
  const built = typeof target === 'function';
  let machine: M | undefined;
  try {
    machine = typeof target === 'function' ? await target(config) : target;
    checkConfig(config, describeMachine(machine));
    machine.pause();
    const slots = new Map(machine.vm.memory.listSlots().map((s) => [s.id, s.bytes]));
    const ram = emptyRamStats();
    let state: MachineState | undefined;
    let rounds = 0;
    for (;;) {
      const f: Frame = await reader.expect(state ? 'before its END section' : 'before its STATE section');
      switch (f.type) {
        case Section.Ram:
          if (state) throw new MigrationError('protocol', `corrupt stream: RAM section #${f.index} after the STATE section`);
          applyRamSection(f, slots, ram);
          break;
        case Section.Round:
          rounds++;
          hooks.onRound?.(rounds);
          break;
        case Section.State:
          if (state) throw new MigrationError('protocol', `corrupt stream: a second STATE section (#${f.index})`);
          state = validateState(parseJson(f));
          break;
        case Section.End: {
          if (!state) throw new MigrationError('corrupt', `corrupt stream: END (section #${f.index}) without a STATE section`);
          const end = parseJson(f) as { sections?: unknown; pages?: unknown };
          if (end.sections !== f.index || end.pages !== ramPagesOf(ram)) {
            throw new MigrationError(
              'corrupt',
              `corrupt stream: END says ${String(end.sections)} sections and ${String(end.pages)} pages came before it, but ${f.index} sections and ${ramPagesOf(ram)} pages were read`,
            );
          }
          applyState(machine, state);
          return { machine, config, state, ram, bytes: reader.offset, rounds };
        }
        case Section.Abandon:
          throw new MigrationError('remote', `the source abandoned the migration: ${String((parseJson(f) as { reason?: unknown }).reason)}`);
        default:
          throw new MigrationError('protocol', `corrupt stream: unexpected ${sectionName(f.type)} section #${f.index} at byte ${f.offset}`);
      }
    }
  } catch (err) {
    if (built) machine?.close?.();
    throw err;
  }
}
