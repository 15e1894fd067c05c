// A container application that follows USB/serial hot-plug on a VeeaHub and saves its keystore
// on demand (`docker kill -s USR1 <container>`). An installed app imports 'veea-hmd/client'.
import { Status, connectAgent } from '../../src/client/index.js';

const agent = await connectAgent({
  onInserted: (n) => console.log(`${n.replay ? 'present' : 'inserted'}: ${n.deviceId} ${n.properties['DEVNAME'] ?? ''}`),
  onRemoved: (n) => console.log(`removed: ${n.deviceId}`),
  onStateChange: (state) => {
    console.log(`hmd: ${state}`);
    // The bus itself is gone: let the container's restart policy start us afresh.
    if (state === 'daemon-gone') process.exit(1);
  },
});
console.log(`listening as ${agent.busName}`);

process.on('SIGUSR1', () => {
  agent.saveKeystore().then(
    (status) => console.log(status === Status.OK ? 'keystore saved' : `keystore not saved (status ${status})`),
    (err: unknown) => console.error('keystore save failed:', err),
  );
});
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => void agent.close().then(() => process.exit(0)));
}
