/**
 * A private nginx reverse proxy for the differential tests (issue 14): its own prefix, config, pid and
 * error log in a temp dir, 127.0.0.1 on a free port, one worker, started and stopped by its PID
 * (as test/diagnose/logs-nginx.test.ts does). Configured as a plain reverse proxy would be: HTTP/1.1
 * to the upstream, the client's Host passed on, request bodies buffered (nginx's default).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx'].find((p) =>
  existsSync(p),
);

export interface NginxProxy {
  readonly port: number;
  readonly pid: number;
  /** nginx's error log so far (why it refused what it refused). */
  errorLog(): string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * `keepalive`: reuse upstream connections (`upstream { keepalive N; }`), as a production nginx in front of an
 * HTTP/1.1 upstream would; without it nginx opens one upstream connection per request.
 */
export async function startNginxProxy(
  upstreamPort: number,
  opts: { keepalive?: number } = {},
): Promise<NginxProxy> {
  if (NGINX === undefined) throw new Error('nginx is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'sluice-nginx-diff-'));
  for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, t));
  const port = await freePort();
  const root = process.getuid?.() === 0 ? 'user root;' : '';
  writeFileSync(
    join(dir, 'nginx.conf'),
    `${root}
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${opts.keepalive === undefined ? '' : `  upstream backend { server 127.0.0.1:${upstreamPort}; keepalive ${opts.keepalive}; }\n`}  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://${opts.keepalive === undefined ? `127.0.0.1:${upstreamPort}` : 'backend'};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
    }
  }
}
`,
  );
  const child: ChildProcess = spawn(
    NGINX,
    ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += d));
  for (let i = 0; ; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(500) }).then((r) =>
        r.arrayBuffer(),
      );
      break;
    } catch {
      if (i > 100 || child.exitCode !== null) throw new Error(`nginx did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    pid: child.pid as number,
    errorLog: () => {
      try {
        return readFileSync(join(dir, 'error.log'), 'utf8');
      } catch {
        return '';
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGQUIT');
        await once(child, 'exit');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
