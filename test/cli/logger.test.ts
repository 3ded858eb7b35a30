import { PassThrough } from 'node:stream';
import t from 'tap';
import { serviceLogger } from '../../src/cli/logger.js';

async function logged(isTTY: boolean): Promise<string> {
  const out = Object.assign(new PassThrough(), { isTTY });
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const logger = await serviceLogger('info', out);
  logger.info({ port: 5514 }, 'syslog: UDP and TCP on 0.0.0.0:5514');
  logger.debug('below the level');
  logger.flush();
  await new Promise((resolve) => setImmediate(resolve));
  return Buffer.concat(chunks).toString('utf8');
}

t.test('on a terminal: readable lines, not JSON', async (t) => {
  const text = await logged(true);
  t.match(text, /INFO.*syslog: UDP and TCP on 0\.0\.0\.0:5514/);
  t.match(text, /port\S*: 5514/, "its fields on lines of their own");
  t.notOk(text.trimStart().startsWith('{'), 'not JSON');
  t.notMatch(text, /below the level/);
});

t.test('anywhere else: one JSON object per line', async (t) => {
  const lines = (await logged(false)).trim().split('\n');
  t.equal(lines.length, 1);
  const entry = JSON.parse(lines[0]!) as Record<string, unknown>;
  t.match(entry, { level: 30, name: 'dockflow', port: 5514, msg: 'syslog: UDP and TCP on 0.0.0.0:5514' });
});
