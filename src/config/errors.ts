/**
 * The error a config that cannot be used raises, shared by the loader (load.ts) and the resolver
 * (resolve.ts) without either importing the other.
 */

export interface ConfigIssue {
  /** Dotted key path such as `routes[0].timeouts.conect`. */
  path: string;
  line?: number;
  message: string;
}

/** A config that cannot be used. `message` lists every issue, one per line, with file and line. */
export class ConfigError extends Error {
  readonly code = 'config-invalid';
  readonly file: string;
  readonly issues: ConfigIssue[];
  constructor(file: string, issues: ConfigIssue[]) {
    super(issues.map((i) => formatIssue(file, i)).join('\n'));
    this.name = 'ConfigError';
    this.file = file;
    this.issues = issues;
  }
}

export function formatIssue(file: string, issue: ConfigIssue): string {
  const where = issue.line ? `${file}:${issue.line}` : file;
  return issue.path ? `${where}: ${issue.path}: ${issue.message}` : `${where}: ${issue.message}`;
}
