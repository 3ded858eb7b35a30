import t, { type Test } from 'tap';
import { decodeEntry, decodeRecord, encodeRecord, RECORD_FIELD } from '../../src/store/encode.js';
import { plain, realRecords } from './records.js';

t.test('every real record survives encode/decode unchanged', async (t) => {
  t.ok(realRecords().length >= 50, 'the fixture parses');
  // Absent fields are `undefined` in a record and simply missing once stored.
  for (const r of realRecords()) t.strictSame(decodeEntry([RECORD_FIELD, encodeRecord(r)]), plain(r));
});

t.test('entries that are not records decode to undefined', async (t) => {
  const good = encodeRecord(realRecords()[0]!);
  const cases: Array<[string, string[]]> = [
    ['no fields', []],
    ['other field only', ['x', good]],
    ['field without value', [RECORD_FIELD]],
    ['not JSON', [RECORD_FIELD, '{"@timestamp":']],
    ['JSON but not a record', [RECORD_FIELD, '{"a":1}']],
    ['no direction', [RECORD_FIELD, '{"@timestamp":"2026-01-01T00:00:00Z","network":{}}']],
    ['null', [RECORD_FIELD, 'null']],
  ];
  for (const [name, fields] of cases) t.equal(decodeEntry(fields), undefined, name);
  t.strictSame(decodeEntry(['x', '1', RECORD_FIELD, good]), plain(realRecords()[0]!), 'finds r after other fields');
  t.equal(decodeRecord('[]'), undefined);
});
