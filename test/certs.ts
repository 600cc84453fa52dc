/** Certificates for TLS tests, made by openssl in a temporary directory (Debian's openssl; .ci/run installs it). */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CertDir {
  readonly dir: string;
  /** The absolute path of a file in the directory. */
  path(file: string): string;
  /** A self-signed certificate: `<file>.pem` and `<file>.key`. */
  selfSigned(file: string, cn: string): void;
  /** The test CA (`ca.pem`, `ca.key`); call once before `issue`. */
  ca(): void;
  /** A leaf signed by the test CA, with one subjectAltName (`DNS:a.test`, `IP:127.0.0.1`). */
  issue(file: string, san: string): void;
  remove(): void;
}

export function certDir(prefix: string): CertDir {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const selfSigned = (file: string, cn: string) =>
    openssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${file}.key`,
      '-out',
      `${file}.pem`,
      '-days',
      '2',
      '-subj',
      `/CN=${cn}`,
    );
  return {
    dir,
    path: (file) => join(dir, file),
    selfSigned,
    ca: () => selfSigned('ca', 'Test CA'),
    issue(file, san) {
      writeFileSync(join(dir, `${file}.ext`), `subjectAltName=${san}\n`);
      const cn = san.replace(/^(DNS|IP):/, '');
      openssl(
        'req',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        `${file}.key`,
        '-out',
        `${file}.csr`,
        '-subj',
        `/CN=${cn}`,
      );
      openssl(
        'x509',
        '-req',
        '-in',
        `${file}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${file}.pem`,
        '-days',
        '2',
        '-extfile',
        `${file}.ext`,
      );
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
