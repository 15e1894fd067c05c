/**
 * veea-hmd/client: the container side of the VeeaHub Hardware Monitoring Daemon. A container
 * application calls `connectAgent()` and receives device inserts and removes as callbacks.
 */
export { connectAgent, type Agent, type AgentOptions, type AgentState } from './agent.js';
export { parseNotice, SequenceTracker, type DeviceNotice, type NoticeType } from './notice.js';
export { Status } from '../constants.js';
export { HmdError, ErrorCode, isHmdError } from '../errors.js';
