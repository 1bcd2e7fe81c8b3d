/**
 * `kvmts monitor ADDRESS [REQUEST...]`: send requests to a running VM's monitor and print each
 * reply as one JSON line.
 * @module
 */

import { Command } from 'commander';
import { CliError, ExitStatus } from '../errors.js';
import type { CliIo } from '../main.js';
import { MonitorClient } from './client.js';
import { parseMonitorAddress } from './protocol.js';

/** Exit status when the monitor answered at least one request with an error. */
export const MONITOR_ERROR_REPLY_STATUS = 1;

const MONITOR_HELP = `
ADDRESS is where 'kvmts run --monitor' listens: unix:PATH or tcp:HOST:PORT.
Each REQUEST is a JSON object, {"execute": NAME, "arguments": {...}}, or just a command
name. With no REQUEST, the monitor's greeting is printed.

Examples:
  kvmts monitor unix:/tmp/vm.sock query-status
  kvmts monitor tcp:127.0.0.1:4444 '{"execute":"balloon","arguments":{"value":268435456}}'
  kvmts monitor tcp:127.0.0.1:4444 query-commands

Exit status:
  0    every request succeeded
  1    the monitor answered a request with an error (the reply is printed)
  64   bad command line (address or request)
  69   the monitor cannot be reached or stopped answering`;

/** A request argument as the line to send: JSON objects as they are, a bare name as {"execute": name}. */
export function requestLine(arg: string): string {
  const text = arg.trim();
  if (text.startsWith('{')) {
    try {
      JSON.parse(text);
    } catch (err) {
      throw new CliError(`request '${arg}' is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
    }
    return text;
  }
  if (!/^[a-z][a-z0-9_-]*$/.test(text)) throw new CliError(`request '${arg}' is neither a JSON object nor a command name`);
  return JSON.stringify({ execute: text });
}

/** The `monitor` command; register it with {@link addMonitorCommand} (or `program.addCommand`). */
export function createMonitorCommand(io: CliIo, setStatus: (status: number) => void): Command {
  return new Command('monitor')
    .description("Send requests to a running VM's monitor (kvmts run --monitor) and print the replies.")
    .argument('<address>', 'unix:PATH or tcp:HOST:PORT')
    .argument('[request...]', 'JSON requests or command names, sent in order')
    .option('--timeout <ms>', 'give up after this many ms without an answer', '10000')
    .addHelpText('after', MONITOR_HELP)
    .action(async (addressText: string, requests: string[], opts: { timeout: string }) => {
      let address;
      try {
        address = parseMonitorAddress(addressText);
      } catch (err) {
        throw new CliError((err as Error).message);
      }
      const timeoutMs = Number(opts.timeout);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new CliError(`--timeout ${opts.timeout} is not a positive number of ms`);
      const lines = requests.map(requestLine);
      let client: MonitorClient;
      try {
        client = await MonitorClient.connect(address, { timeoutMs });
      } catch (err) {
        throw new CliError(`cannot reach the monitor at ${addressText}: ${(err as Error).message}`, ExitStatus.Unavailable);
      }
      try {
        if (lines.length === 0) io.stdout(`${JSON.stringify(client.greeting)}\n`);
        let status: number = ExitStatus.Ok;
        for (const line of lines) {
          const reply = await client.request(line);
          io.stdout(`${JSON.stringify(reply)}\n`);
          if ('error' in reply) status = MONITOR_ERROR_REPLY_STATUS;
        }
        setStatus(status);
      } catch (err) {
        throw new CliError(`monitor at ${addressText}: ${(err as Error).message}`, ExitStatus.Unavailable);
      } finally {
        client.close();
      }
    });
}

/** Add `monitor` to `program`, with the program's settings (exitOverride, output). */
export function addMonitorCommand(program: Command, io: CliIo, setStatus: (status: number) => void): void {
  const command = createMonitorCommand(io, setStatus);
  command.copyInheritedSettings(program);
  program.addCommand(command);
}
