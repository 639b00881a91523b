# Regenerates the hostile spec corpus from jobs/deleted-runs.toml: python3 tests/hostile-specs/generate.py
# (run from the project root). Each case is one file and the word its error must name.
import os
base = open('jobs/deleted-runs.toml').read()
out = 'tests/hostile-specs'
cases = []
def case(name, text, needle):
    cases.append((name, text, needle))
def sub(old, new):
    assert old in base, old
    return base.replace(old, new, 1)

case('unknown-top-level-key', base + '\nretention = "30d"\n', 'retention')
case('unknown-subject-key', sub('clock = "deleted_time"', 'clock = "deleted_time"\nwhere = "1=1"'), 'where')
case('unknown-window-key', sub('grace = "7d"', 'grace = "7d"\nmax = "30d"'), 'max')
case('unknown-rows-key', sub('table = "metrics"\ncolumn = "run_id"', 'table = "metrics"\ncolumn = "run_id"\ncascade = true'), 'cascade')
case('unknown-objects-key', sub('prefix = "runs/{key}/"', 'prefix = "runs/{key}/"\nrecursive = false'), 'recursive')
case('zero-grace', sub('grace = "7d"', 'grace = "0d"'), 'zero')
case('negative-grace', sub('grace = "7d"', 'grace = "-1d"'), 'grace')
case('missing-unit', sub('grace = "7d"', 'grace = "7"'), 'no unit')
case('number-for-window', sub('grace = "7d"', 'grace = 7'), 'grace')
case('fractional-window', sub('grace = "7d"', 'grace = "1.5d"'), 'grace')
case('words-for-window', sub('grace = "7d"', 'grace = "7 days"'), 'grace')
case('unknown-unit', sub('grace = "7d"', 'grace = "7y"'), 'unit')
case('deadline-before-grace', sub('grace = "7d"', 'grace = "40d"'), 'shorter than grace')
case('huge-window', sub('deadline = "30d"', 'deadline = "99999999999d"'), 'deadline')
case('missing-subject', base.replace('[subject]', '[subjects]', 1), 'subject')
case('missing-clock', sub('clock = "deleted_time"\n', ''), 'clock')
case('missing-schedule', sub('schedule = "0 15 3 * * *"\n', ''), 'schedule')
case('bad-cron-words', sub('0 15 3 * * *', 'every day'), 'schedule')
case('bad-cron-fields', sub('0 15 3 * * *', '0 15 3 * * * * *'), 'schedule')
case('cron-out-of-range', sub('0 15 3 * * *', '0 75 3 * * *'), 'schedule')
case('filter-or-widens', sub("lifecycle_stage = 'deleted'", "lifecycle_stage = 'deleted' OR 1 = 1"), 'filter')
case('filter-sql-injection', sub("lifecycle_stage = 'deleted'", "lifecycle_stage = 'deleted'; DROP TABLE runs"), 'filter')
case('filter-subquery', sub("lifecycle_stage = 'deleted'", "id IN (SELECT id FROM runs)"), 'filter')
case('filter-function-call', sub("lifecycle_stage = 'deleted'", "lower(lifecycle_stage) = 'deleted'"), 'filter')
case('filter-comment', sub("lifecycle_stage = 'deleted'", "lifecycle_stage = 'deleted' -- and more"), 'filter')
case('filter-unclosed-quote', sub("lifecycle_stage = 'deleted'", "lifecycle_stage = 'deleted"), 'filter')
case('filter-unknown-column', sub("lifecycle_stage = 'deleted'", "stage = 'deleted'"), 'stage')
case('filter-literal-wrong-type', sub("lifecycle_stage = 'deleted'", "lifecycle_stage = 'deleted' AND account_id = 'abc'"), 'abc')
case('filter-empty', sub("lifecycle_stage = 'deleted'", ""), 'filter')
case('identifier-with-quote', sub('table = "metrics"', 'table = "metrics\\"; --"'), 'identifier')
case('identifier-with-semicolon', sub('column = "run_id"', 'column = "run_id;"'), 'identifier')
case('identifier-with-space', sub('column = "run_id"', 'column = "run id"'), 'identifier')
case('identifier-too-long', sub('column = "run_id"', 'column = "' + 'x' * 70 + '"'), 'identifier')
case('schema-three-parts', sub('table = "metrics"', 'table = "a.b.metrics"'), 'metrics')
case('unknown-table', sub('table = "metrics"', 'table = "metricz"'), 'metricz')
case('unknown-rows-column', sub('column = "run_id"', 'column = "runid"'), 'runid')
case('unknown-subject-key-column', sub('key = "id"', 'key = "ident"'), 'ident')
case('unknown-owner-column', sub('owner = "account_id"', 'owner = "acct"'), 'acct')
case('clock-kind-mismatch', sub('clock_kind = "epoch_milliseconds"', 'clock_kind = "timestamptz"'), 'clock_kind')
case('clock-kind-unknown', sub('clock_kind = "epoch_milliseconds"', 'clock_kind = "epoch_nanoseconds"'), 'clock_kind')
case('clock-is-text-column', sub('clock = "deleted_time"', 'clock = "name"'), 'name')
case('type-confusion-key-number', sub('key = "id"', 'key = 5'), 'key')
case('type-confusion-rows-table', sub('table = "metrics"', 'table = ["metrics"]'), 'table')
case('prefix-without-slash', sub('prefix = "runs/{key}/"', 'prefix = "runs/{key}"'), 'prefix')
case('prefix-without-placeholder', sub('prefix = "runs/{key}/"', 'prefix = "runs/"'), 'placeholder')
case('prefix-starting-with-placeholder', sub('prefix = "runs/{key}/"', 'prefix = "{key}/runs/"'), 'prefix')
case('prefix-unknown-placeholder', sub('prefix = "runs/{key}/"', 'prefix = "runs/{nope}/"'), 'nope')
case('prefix-dot-dot', sub('prefix = "runs/{key}/"', 'prefix = "runs/../{key}/"'), 'prefix')
case('bucket-invalid', sub('bucket = "lethe-artifacts"', 'bucket = "Bad_Bucket"'), 'Bad_Bucket')
case('bucket-and-uri-column', sub('prefix = "runs/{key}/"', 'prefix = "runs/{key}/"\nuri_column = "artifact_uri"'), 'uri_column')
case('uri-column-unknown', sub('uri_column = "artifact_uri"', 'uri_column = "artifact_url"'), 'artifact_url')
case('objects-from-unknown-entry', sub('prefix = "runs/{key}/"', 'prefix = "runs/{key}/"\nfrom = "nowhere"'), 'nowhere')
case('rows-parent-unknown', sub('table = "snapshot_files"\ncolumn = "snapshot_id"\nparent = "snapshots"', 'table = "snapshot_files"\ncolumn = "snapshot_id"\nparent = "snapshotz"'), 'snapshotz')
case('rows-duplicate-name', sub('name = "run_links"', 'name = "metrics"'), 'metrics')
case('job-name-invalid', 'name = "Bad Name!"\n' + base, 'name')
case('uncovered-foreign-key-filtered-entry', sub('table = "metrics"\ncolumn = "run_id"', 'table = "metrics"\ncolumn = "run_id"\nfilter = "step > 0"'), 'metrics_run_id_fkey')
case('missing-fk-entry', sub('[[rows]]\ntable = "params"\ncolumn = "run_id"\n\n', ''), 'params_run_id_fkey')
case('vary-by-without-overrides', sub('deadline = "30d"', 'deadline = "30d"\nvary_by = "name"'), 'vary_by')
case('overrides-without-vary-by', sub('deadline = "30d"', 'deadline = "30d"\n\n[window.overrides.x]\ngrace = "1d"\ndeadline = "2d"'), 'overrides')
case('override-deadline-before-grace', sub('deadline = "30d"', 'deadline = "30d"\nvary_by = "name"\n\n[window.overrides.x]\ngrace = "9d"\ndeadline = "2d"'), 'shorter than grace')
case('crlf-with-unknown-key', sub('grace = "7d"', 'grace = "7d"\nttl = "1d"').replace('\n', '\r\n'), 'ttl')
case('bom-with-zero-window', '\ufeff' + sub('grace = "7d"', 'grace = "0s"'), 'zero')
case('not-toml', 'this is not a job spec { at all ]\n', 'toml')
case('empty-file', '', 'schedule')
# Beside the shipped specs: a second job on a subject table another job already selects from.
closed = open('jobs/closed-accounts.toml').read()
assert "status IN ('closed', 'banned')" in closed
case('overlapping-jobs-on-one-table', closed.replace("status IN ('closed', 'banned')", "status = 'closed'"), 'overlap')
case('overlapping-jobs-without-filters', open('jobs/deleted-snapshots.toml').read(), 'overlap')
# Rows outside the subject's part of the foreign-key graph.
case('rows-table-above-subject', base + '\n[[rows]]\ntable = "accounts"\ncolumn = "id"\n', 'above the subject')
case('rows-link-is-a-foreign-key-elsewhere', base + '\n[[rows]]\ntable = "api_keys"\ncolumn = "account_id"\n', 'does not link it to its parent')
# A URI column must say where its URIs may point.
case('uri-column-without-uri-within', sub('uri_column = "artifact_uri"\nuri_within = "s3://lethe-artifacts/"\n', 'uri_column = "artifact_uri"\n'), 'uri_within')
case('uri-segment-unknown-column', sub('uri_column = "artifact_uri"\n', 'uri_column = "artifact_uri"\nuri_segment = "run_uuid"\n'), 'run_uuid')

os.makedirs(out, exist_ok=True)
for f in os.listdir(out):
    if f.endswith('.toml'):
        os.remove(os.path.join(out, f))
index = []
for name, text, needle in cases:
    fn = f'{name}.toml'
    with open(os.path.join(out, fn), 'w', newline='') as fh:
        fh.write(text)
    index.append(f'{fn}\t{needle}')
# A spec larger than 1 MiB: comments only, generated by the test itself (not committed).
with open(os.path.join(out, 'EXPECTED.tsv'), 'w') as fh:
    fh.write('# file<TAB>what the error must name (besides the file and a line)\n')
    fh.write('\n'.join(index) + '\n')
print(len(cases), 'cases')
