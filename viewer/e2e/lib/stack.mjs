// The local stack under test: `cirrus dev` in a child process on free ports with its own data
// folder, the test files sent to it with dcmtk's storescu, and a wait until QIDO finds them.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { AwsClient } from 'aws4fetch';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const distDir = path.join(repoRoot, 'viewer', 'dist');

const READY = /Cirrus local stack running: DICOM (\S+)@([\d.]+):(\d+), DICOMweb (http:\/\/\S+\/dicomweb)/;
const START_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 60_000;

/** Returns the interpreter that runs cirrus: CIRRUS_PYTHON, or else the repository's .venv. */
export function pythonPath() {
  const python = process.env.CIRRUS_PYTHON ?? path.join(repoRoot, '.venv', 'bin', 'python');
  if (!existsSync(python)) {
    throw new Error(`${python} not found: run scripts/bootstrap, or set CIRRUS_PYTHON to a Python with cirrus installed`);
  }
  return python;
}

/** Returns the environment of every Python child: this checkout's code first on the path, and
 * fake AWS credentials. */
export function pythonEnv(extra = {}) {
  return {
    ...process.env,
    PYTHONPATH: [path.join(repoRoot, 'layers', 'shared', 'python'), repoRoot].join(path.delimiter),
    PYTHONUNBUFFERED: '1',
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_SESSION_TOKEN: 'testing',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
    ...extra,
  };
}

/** Creates a temporary folder that `remove` deletes, unless CIRRUS_E2E_KEEP=1 keeps it. */
export function temporaryFolder(prefix) {
  const folder = mkdtempSync(path.join(tmpdir(), prefix));
  return {
    path: folder,
    remove() {
      if (process.env.CIRRUS_E2E_KEEP !== '1') rmSync(folder, { recursive: true, force: true });
    },
  };
}

/**
 * Starts `cirrus dev` on `dataDir` with free ports (or `httpPort`), one gateway process, and
 * `options` added; resolves once it reports that it is running.
 */
export async function startStack(dataDir, { options = [], httpPort = 0 } = {}) {
  if (!existsSync(path.join(distDir, 'index.html'))) {
    throw new Error(`${distDir}/index.html not found: build the viewer first (cd viewer && npm run build)`);
  }
  const args = [
    '-m', 'cirrus.cli', 'dev',
    '--http-port', String(httpPort), '--dicom-port', '0', '--gateway-workers', '1',
    '--data-dir', dataDir, '--viewer-dir', distDir, ...options,
  ];
  const child = spawn(pythonPath(), args, { env: pythonEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const collect = (chunk) => lines.push(...chunk.toString().split('\n').filter(Boolean));
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));

  const deadline = Date.now() + START_TIMEOUT_MS;
  let match = null;
  while (!match) {
    match = lines.map((line) => READY.exec(line)).find(Boolean);
    if (match) break;
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      const reason = Date.now() > deadline ? `did not start within ${START_TIMEOUT_MS / 1000} s` : 'exited';
      throw new Error(`cirrus dev ${reason}; its last output:\n${lines.slice(-30).join('\n')}`);
    }
    await sleep(50);
  }
  const [, aeTitle, host, dicomPort, dicomweb] = match;
  const baseUrl = dicomweb.replace(/\/dicomweb$/, '');
  return {
    pid: child.pid,
    aeTitle,
    host,
    dicomPort: Number(dicomPort),
    dicomweb,
    baseUrl,
    httpPort: Number(new URL(baseUrl).port),
    lines,
    /** Sends SIGINT to the stack's PID, as Ctrl-C does; SIGKILL if it has not exited in 60 s. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGINT');
      // An unreferenced timer, so that it does not keep the test process alive after the stop.
      const timeout = sleep(STOP_TIMEOUT_MS, 'timeout', { ref: false });
      const result = await Promise.race([exited, timeout]);
      if (result === 'timeout') {
        child.kill('SIGKILL');
        await exited;
        throw new Error(`cirrus dev (PID ${child.pid}) did not stop within ${STOP_TIMEOUT_MS / 1000} s of SIGINT`);
      }
      return result;
    },
  };
}

/** Runs `command`; resolves with its exit code, its stdout, and stdout and stderr together.
 * It does not block, so this process keeps reading the stack's output meanwhile: a full
 * pipe would stall the stack. */
function run(command, args, options) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let output = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      output += chunk;
    });
    child.stderr.on('data', (chunk) => (output += chunk));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, output }));
  });
}

/** Writes the test files with viewer/e2e/make_series.py; returns the list it prints. */
export async function makeSeries(outDir, command, ...options) {
  const script = path.join(repoRoot, 'viewer', 'e2e', 'make_series.py');
  const result = await run(pythonPath(), [script, command, outDir, ...options], { env: pythonEnv() });
  if (result.code !== 0) {
    throw new Error(`make_series.py ${command} failed (exit ${result.code}):\n${result.output}`);
  }
  return JSON.parse(result.stdout);
}

/** Sends `files` (make_series.py's list) to the stack's gateway with storescu, one
 * association per transfer syntax. */
export async function storeFiles(stack, files) {
  const groups = new Map();
  for (const file of files) {
    const option = file.syntax_option ?? '';
    groups.set(option, [...(groups.get(option) ?? []), file]);
  }
  for (const [option, group] of groups) {
    const args = ['-aec', stack.aeTitle, '-R', ...(option ? [option] : []), stack.host, String(stack.dicomPort)];
    const paths = group.map((file) => file.path);
    let result;
    try {
      result = await run('storescu', [...args, ...paths], { env: { ...process.env, TCP_NODELAY: '1' } });
    } catch (error) {
      throw new Error(`storescu could not run (${error.message}); install dcmtk`);
    }
    if (result.code !== 0) {
      const stackOutput = stack.lines.slice(-20).join('\n');
      throw new Error(
        `storescu ${option} failed (exit ${result.code}) for ${group.length} files:\n${result.output}\nthe stack's last output:\n${stackOutput}`,
      );
    }
  }
}

/** Resolves once QIDO-RS lists every instance of `files` in its study, or throws after
 * `timeoutMs`. `signer` (an aws4fetch AwsClient) signs the requests of a closed stack. */
export async function waitForStudies(stack, files, { signer = null, timeoutMs = 60_000 } = {}) {
  const expected = new Map();
  for (const file of files) expected.set(file.study, (expected.get(file.study) ?? 0) + 1);
  const get = signer ? signer.fetch.bind(signer) : fetch;
  const deadline = Date.now() + timeoutMs;
  const missing = new Map(expected);
  while (missing.size > 0) {
    for (const [study, count] of missing) {
      const response = await get(`${stack.dicomweb}/studies/${study}/instances`, {
        headers: { Accept: 'application/dicom+json' },
      });
      const found = response.status === 200 ? (await response.json()).length : 0;
      if (response.status !== 200 && response.status !== 204) {
        throw new Error(`QIDO-RS of study ${study} returned ${response.status}: ${await response.text()}`);
      }
      if (found >= count) missing.delete(study);
    }
    if (missing.size === 0) break;
    if (Date.now() > deadline) {
      const list = [...missing].map(([study, count]) => `${study} (${count})`).join(', ');
      throw new Error(`QIDO-RS did not list every instance within ${timeoutMs / 1000} s; missing studies: ${list}`);
    }
    await sleep(200);
  }
}

/** Returns an aws4fetch client that signs as the local stack expects (execute-api, us-east-1). */
export function signerFor(accessKeyId, secretAccessKey) {
  return new AwsClient({ accessKeyId, secretAccessKey, service: 'execute-api', region: 'us-east-1' });
}
