// Starts `hetmoe serve` on a free port and waits until /health answers 200; stops it again.
import { spawn } from 'node:child_process';

export async function startServer(binary, args, { log = false } = {}) {
  const child = spawn(binary, ['serve', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening on" line after 60 s:\n${stderr}`)), 60000);
    child.stderr.on('data', (chunk) => {
      stderr += chunk.toString();
      if (log) process.stderr.write(chunk);
      const m = stderr.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`hetmoe serve exited with ${code}:\n${stderr}`)); });
  });
  const base = `http://127.0.0.1:${port}`;
  let sawLoading = false;
  for (let i = 0; ; ++i) {
    const r = await fetch(`${base}/health`).catch(() => null);
    if (r && r.status === 200) break;
    if (r && r.status === 503) sawLoading = (await r.json()).status === 'loading' || sawLoading;
    if (i > 600) throw new Error(`/health never answered 200:\n${stderr}`);
    await new Promise((res) => setTimeout(res, 100));
  }
  return {
    port, base, child, sawLoading,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = new Promise((res) => child.on('exit', (code) => res(code)));
      child.kill('SIGTERM');
      return exited;
    },
  };
}
