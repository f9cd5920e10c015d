// Starts the real pushgate binary for a test and tells its addresses.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../../../..');
export const binary = process.env.PUSHGATE_BIN || path.join(repoRoot, '.tools/pushgate-e2e');
export const artifacts = process.env.PUSHGATE_ARTIFACTS || path.join(repoRoot, 'test-artifacts');
mkdirSync(artifacts, { recursive: true });

// engine is the engine the tests run pushgate on: "memory" (default) or
// "redis" (PUSHGATE_TEST_ENGINE=redis; `make test` runs both).
export const engine = process.env.PUSHGATE_TEST_ENGINE || 'memory';

// start runs pushgate on free loopback ports with extra flags and resolves
// once it logs "pushgate started". With the Redis test engine, and unless
// args choose an engine, it gets a redis-server of its own (so every start
// begins with empty state, as with the memory engine), stopped when
// pushgate exits.
export async function start(args = [], env = {}) {
  if (engine === 'redis' && !args.includes('--engine')) {
    const redis = await startRedis();
    const s = await startBinary(['--engine', 'redis', '--redis-url', redis.url, ...args], env)
      .catch(async (err) => { await redis.stop(); throw err; });
    s.exited.then(() => redis.stop());
    return s;
  }
  return startBinary(args, env);
}

function startBinary(args, env) {
  const child = spawn(binary, [
    '--log-format', 'json', '--http-addr', '127.0.0.1:0', '--grpc-addr', '127.0.0.1:0',
    '--drain-window', '200ms', ...args,
  ], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const logs = [];
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('pushgate did not start:\n' + logs.join('\n'))), 15000);
    createInterface({ input: child.stderr }).on('line', (line) => {
      logs.push(line);
      let rec;
      try { rec = JSON.parse(line); } catch { return; }
      if (rec.msg === 'pushgate started') {
        clearTimeout(timer);
        resolve({
          http: rec.http, grpc: rec.grpc, ops: rec.ops, logs, child, exited,
          async stop() {
            if (child.exitCode === null) child.kill('SIGTERM');
            return exited;
          },
        });
      }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`pushgate exited ${code}:\n` + logs.join('\n'))); });
  });
}

// waitFor polls cond until it is truthy or the deadline passes.
export async function waitFor(what, cond, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
export const chromiumArgs = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// startRedis runs redis-server (persistence off) on a free loopback port.
export async function startRedis() {
  const { freePort } = await import('./util.mjs');
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('redis-server did not start')), 10000);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.includes('Ready to accept connections')) { clearTimeout(timer); resolve(); }
    });
  });
  return {
    url: `redis://127.0.0.1:${port}/0`,
    async stop() { if (child.exitCode === null) child.kill('SIGKILL'); return exited; },
  };
}
