import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { tempDir } from './temp.js';

const mount = (bytes: number, dir: string): void =>
  void execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });

/** Why a test cannot mount a tmpfs here (not root, no mount permission), or false: it can. For `{ skip }`. */
export function tmpfsUnavailable(): string | false {
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root';
  const dir = mkdtempSync(join(tmpdir(), 'dockflow-tmpfs-probe-'));
  try {
    mount(64 * 1024, dir);
    execFileSync('umount', [dir], { stdio: 'pipe' });
    return false;
  } catch (err) {
    return `cannot mount a tmpfs: ${(err as { stderr?: Buffer }).stderr?.toString().trim() ?? String(err)}`;
  } finally {
    rmdirSync(dir);
  }
}

/** A tmpfs of `bytes` mounted on a fresh directory, unmounted when the test ends: a disk that really fills. */
export function smallTmpfs(t: Test, bytes: number): string {
  const dir = tempDir(t, 'tmpfs');
  mount(bytes, dir);
  // Registered after tempDir's removal, so it runs first (teardowns run last registered first).
  t.teardown(() => execFileSync('umount', ['-l', dir], { stdio: 'pipe' }));
  return dir;
}
