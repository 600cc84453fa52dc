/**
 * Watches the config file for changes (SPEC §8 `watch`, default on) and calls back once per real
 * change, debounced.
 *
 * The directory is watched rather than the file: editors (vim, VS Code, sed -i) and Kubernetes
 * ConfigMaps save by writing a new file and renaming it over the old one, which replaces the inode
 * a file watch would be bound to. A change is real when the bytes differ from the last ones seen, so
 * a touch, a save without edits, or the several events of one save reload nothing.
 */
import { createHash } from 'node:crypto';
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';

export interface ConfigWatcher {
  /** Takes the file's current bytes as seen (after a reload that did not come from the watcher). */
  seen(): void;
  close(): void;
}

export interface WatchOptions {
  /** Quiet time after the last event before the file is read (ms). Default 200. */
  debounceMs?: number;
  /** The watch itself failed (the directory went away, too many watches). */
  onError?: (err: Error) => void;
}

function digestOf(file: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    // Missing for a moment, between an editor's unlink and rename: the next event reads it.
    return undefined;
  }
}

export function watchConfigFile(
  file: string,
  onChange: () => void,
  options: WatchOptions = {},
): ConfigWatcher {
  const debounceMs = options.debounceMs ?? 200;
  const name = basename(file);
  let last = digestOf(file);
  let timer: NodeJS.Timeout | undefined;
  const check = () => {
    timer = undefined;
    const now = digestOf(file);
    if (now === undefined || now === last) return;
    last = now;
    onChange();
  };
  let watcher: FSWatcher | undefined = watch(dirname(file), { persistent: false }, (_event, changed) => {
    // Only this file, or a Kubernetes-style `..data` symlink swap; not the access log beside it.
    if (changed && changed !== name && !changed.startsWith('..')) return;
    clearTimeout(timer);
    timer = setTimeout(check, debounceMs);
    timer.unref();
  });
  watcher.on('error', (err) => {
    options.onError?.(err);
    watcher?.close();
    watcher = undefined;
  });
  return {
    seen() {
      last = digestOf(file);
    },
    close() {
      clearTimeout(timer);
      watcher?.close();
      watcher = undefined;
    },
  };
}
