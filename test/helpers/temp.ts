import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';

/** A fresh directory under the system's temporary directory, removed when the test ends. */
export function tempDir(t: Test, name = 'test'): string {
  const dir = mkdtempSync(join(tmpdir(), `dockflow-${name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
