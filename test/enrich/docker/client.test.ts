import t from 'tap';
import https from 'node:https';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { compareApiVersions, DockerClient, dockerOptionsFromEnv } from '../../../src/enrich/docker/client.js';
import { DockflowError, ErrorCode } from '../../../src/errors.js';
import type { DockerEvent } from '../../../src/enrich/docker/types.js';
import { FakeDocker } from '../../helpers/fake-docker.js';
import { tempDir } from '../../helpers/temp.js';

const isApiError = (err: unknown): boolean => err instanceof DockflowError && err.code === ErrorCode.DOCKER_API;

t.test('DOCKER_* variables mean what they mean to the docker CLI', async (t) => {
  const cases: { env: NodeJS.ProcessEnv; want: Record<string, unknown> }[] = [
    { env: {}, want: { host: 'unix:///var/run/docker.sock', tls: false, tlsVerify: false } },
    { env: { DOCKER_HOST: 'tcp://10.1.2.3:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: '/certs' }, want: { host: 'tcp://10.1.2.3:2376', tls: true, tlsVerify: true, certPath: '/certs' } },
    { env: { DOCKER_TLS: '1' }, want: { tls: true, tlsVerify: false } },
    { env: { DOCKER_API_VERSION: '1.40' }, want: { apiVersion: '1.40' } },
  ];
  for (const c of cases) t.match(dockerOptionsFromEnv(c.env), c.want, JSON.stringify(c.env));
  t.throws(() => new DockerClient({ host: 'npipe:////./pipe/docker_engine' }), { code: ErrorCode.DOCKER_API });
  t.throws(() => new DockerClient({ host: 'unix://' }), { code: ErrorCode.DOCKER_API });
  t.throws(() => new DockerClient({ host: 'tcp://127.0.0.1:1', tlsVerify: true, certPath: '/nonexistent' }), { code: ErrorCode.DOCKER_API });
});

t.test('versions compare as numbers', async (t) => {
  t.ok(compareApiVersions('1.9', '1.41') < 0);
  t.ok(compareApiVersions('1.47', '1.41') > 0);
  t.equal(compareApiVersions('1.41', '1.41'), 0);
});

t.test('negotiation: min(ours, theirs), from /_ping or else /version, over unix and tcp', async (t) => {
  const cases = [
    { name: 'podman 1.41 over unix', fake: { style: 'podman' as const }, via: 'unix', ours: undefined, want: '1.41' },
    { name: 'newer engine: ours', fake: { apiVersion: '1.51' }, via: 'tcp', ours: undefined, want: '1.47' },
    { name: 'ours lower', fake: { apiVersion: '1.45' }, via: 'tcp', ours: '1.43', want: '1.43' },
    { name: 'no header: /version', fake: { apiVersion: '1.44', pingWithoutVersion: true }, via: 'unix', ours: undefined, want: '1.44' },
  ];
  for (const c of cases) {
    const fake = await FakeDocker.start(c.fake);
    const client = new DockerClient({ host: c.via === 'unix' ? fake.unixHost : fake.tcpHost, ...(c.ours ? { maxApiVersion: c.ours } : {}) });
    t.equal(await client.negotiate(), c.want, c.name);
    await client.listContainers();
    t.equal(fake.requests.at(-1), `/v${c.want}/containers/json?all=false`, `${c.name}: path prefix`);
    if (c.fake.pingWithoutVersion) t.ok(fake.requests.includes('/version'), 'asked /version');
    await fake.dispose();
  }
  const fake = await FakeDocker.start({ apiVersion: '1.41' });
  const pinned = new DockerClient({ host: fake.tcpHost, apiVersion: '1.44' });
  await t.rejects(pinned.listContainers(), /too new/, 'a pinned version the engine refuses is a clear error');
  await fake.dispose();
});

t.test('list, inspect and 404 with the real shapes', async (t) => {
  const fake = await FakeDocker.start({ style: 'podman' });
  t.teardown(() => fake.dispose());
  const id = fake.run({ name: 'fxweb', labels: { 'com.docker.compose.project': 'fxlab', 'com.docker.compose.service': 'web' }, networks: { fxlab_default: { ip: '172.30.0.2', mac: '7e:f0:55:2f:71:b3' } } });
  fake.create({ name: 'idle', networks: { podman: { ip: '10.88.0.9' } } });
  const client = new DockerClient({ host: fake.unixHost });
  const running = await client.listContainers();
  t.equal(running.length, 1);
  t.match(running[0], { Id: id, Names: ['/fxweb'], State: 'running', NetworkSettings: { Networks: { fxlab_default: { IPAddress: '172.30.0.2', MacAddress: '7e:f0:55:2f:71:b3', NetworkID: 'fxlab_default' } } } });
  t.equal((await client.listContainers({ all: true })).length, 2);
  t.match(await client.inspectContainer(id), { Id: id, Name: '/fxweb', State: { Running: true }, Config: { Labels: { 'com.docker.compose.service': 'web' } } });
  t.equal(await client.inspectContainer('nope'), undefined, '404 is "gone", not an error');
});

t.test('failures are DockflowError(DOCKER_API)', async (t) => {
  const dir = tempDir(t, 'client');
  await t.rejects(new DockerClient({ host: `unix://${join(dir, 'missing.sock')}` }).negotiate(), { code: ErrorCode.DOCKER_API }, 'no socket');

  // A server that accepts and never answers: the request timeout ends it.
  const silent = net.createServer(() => undefined);
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  const port = (silent.address() as net.AddressInfo).port;
  const slow = new DockerClient({ host: `tcp://127.0.0.1:${port}`, requestTimeoutMs: 200 });
  await t.rejects(slow.negotiate(), /within 200 ms/);
  silent.close();

  // Garbage instead of JSON.
  const garbage = net.createServer((s) => s.end('HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope!'));
  garbage.listen(0, '127.0.0.1');
  await once(garbage, 'listening');
  const g = new DockerClient({ host: `tcp://127.0.0.1:${(garbage.address() as net.AddressInfo).port}` });
  await t.rejects(g.listContainers(), /invalid JSON/);
  garbage.close();
});

t.test('the event stream: since, filters, lines split across writes, the engine going away', async (t) => {
  const fake = await FakeDocker.start({ style: 'docker', splitWrites: true, clock: () => 1_800_000_000_000 });
  t.teardown(() => fake.dispose());
  const a = fake.run({ name: 'a', networks: { bridge: { ip: '172.17.0.2' } } }, 1_800_000_000_000);
  fake.stop(a, 1_800_000_001_000);
  const client = new DockerClient({ host: fake.tcpHost });
  const stream = await client.events({ since: '1800000000.000000000', filters: { type: ['container'] } });
  const got: DockerEvent[] = [];
  for await (const ev of stream) {
    got.push(ev);
    if (ev.Action === 'stop') break;
  }
  t.same(got.map((e) => e.Action), ['create', 'start', 'kill', 'die', 'stop'], 'network events filtered out');
  t.equal(got[0]!.timeNanoText, '1800000000000000000');
  t.match(fake.requests.at(-1), /since=1800000000\.000000000&filters=/);

  const live = await client.events({});
  const it = live[Symbol.asyncIterator]();
  const next = it.next();
  fake.remove(a, 1_800_000_002_000);
  t.match((await next).value, { Action: 'destroy', Type: 'container' }, 'live events arrive');
  const ending = it.next();
  await fake.close();
  const end = await ending.then(
    (r) => (r.done ? 'ended' : 'value'),
    (err: unknown) => (isApiError(err) ? 'api-error' : String(err)),
  );
  t.ok(end === 'ended' || end === 'api-error', `the iterator stops when the engine goes away (${end})`);
  await fake.listen();
});

t.test('TLS with DOCKER_CERT_PATH, verified against ca.pem', async (t) => {
  const dir = tempDir(t, 'tls');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1'], { stdio: 'ignore' });
  execFileSync('cp', [join(dir, 'cert.pem'), join(dir, 'ca.pem')]);
  let sawClientCert = false;
  const srv = https.createServer(
    { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')), ca: readFileSync(join(dir, 'ca.pem')), requestCert: true, rejectUnauthorized: false },
    (req, res) => {
      sawClientCert ||= (req.socket as import('node:tls').TLSSocket).getPeerCertificate().subject !== undefined;
      res.writeHead(200, { 'Api-Version': '1.43', 'Content-Type': 'application/json' });
      res.end(req.url?.includes('/containers/json') ? '[]' : 'OK');
    },
  );
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => srv.close());
  const port = (srv.address() as net.AddressInfo).port;
  const env = { DOCKER_HOST: `tcp://127.0.0.1:${port}`, DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: dir };
  const client = new DockerClient(dockerOptionsFromEnv(env));
  t.equal(await client.negotiate(), '1.43');
  t.same(await client.listContainers(), []);
  t.ok(sawClientCert, 'the client certificate was presented');
  const otherDir = tempDir(t, 'tls-other');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(otherDir, 'key.pem'), '-out', join(otherDir, 'ca.pem'), '-subj', '/CN=other', '-days', '1'], { stdio: 'ignore' });
  const wrongCa = new DockerClient({ host: `tcp://127.0.0.1:${port}`, tlsVerify: true, certPath: otherDir });
  await t.rejects(wrongCa.negotiate(), { code: ErrorCode.DOCKER_API }, 'a server the CA did not sign is refused');
});
