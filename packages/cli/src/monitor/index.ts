/**
 * The kvmts monitor: a QMP-like JSON-lines control protocol over a Unix socket or TCP, its
 * command registry, server, client and the `kvmts monitor` command.
 * @module
 */

export { BUILTIN_COMMANDS, balloonStatName, builtinRegistry } from './commands.js';
export { MonitorClient } from './client.js';
export type { MonitorClientOptions } from './client.js';
export { MONITOR_ERROR_REPLY_STATUS, addMonitorCommand, createMonitorCommand, requestLine } from './command.js';
export type { MonitorBalloon, MonitorMachine, MonitorRunState } from './machine.js';
export {
  MonitorCommandError,
  describeIssues,
  formatMonitorAddress,
  makeEvent,
  monitorRequestSchema,
  parseMonitorAddress,
} from './protocol.js';
export type {
  MonitorAddress,
  MonitorErrorClass,
  MonitorErrorReply,
  MonitorEvent,
  MonitorGreeting,
  MonitorReply,
  MonitorRequest,
  MonitorReturn,
} from './protocol.js';
export { MonitorCommandRegistry, defineCommand } from './registry.js';
export type { MonitorCommand, MonitorContext } from './registry.js';
export { MONITOR_MAX_LINE, MonitorServer } from './server.js';
export type { MonitorServerOptions } from './server.js';
