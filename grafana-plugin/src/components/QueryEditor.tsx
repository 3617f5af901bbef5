import React, { ChangeEvent, useState } from 'react';
import { QueryEditorProps } from '@grafana/data';
import {
  Button,
  Combobox,
  ComboboxOption,
  InlineField,
  InlineFieldRow,
  InlineSwitch,
  Input,
  MultiCombobox,
  RadioButtonGroup,
  Stack,
} from '@grafana/ui';

import { DataSource } from '../datasource';
import {
  DEFAULT_CALLS_LIMIT,
  DEFAULT_SERVICE_MAP_EDGES,
  DEFAULT_TOP_N,
  DEFAULT_TREE_DEPTH,
  DIMENSIONS,
  METRICS,
  OrbweaverOptions,
  OrbweaverQuery,
  QUERY_TYPES,
  QueryType,
  SORTS,
  STATUS_CLASSES,
  TOKEN_PROBLEMS,
} from '../types';

type Props = QueryEditorProps<DataSource, OrbweaverQuery, OrbweaverOptions>;

const options = (values: readonly string[]): Array<ComboboxOption<string>> =>
  values.map((v) => ({ label: v, value: v }));

type TextKey =
  | 'clientIp'
  | 'serverIp'
  | 'serverName'
  | 'pathPrefix'
  | 'pathRegex'
  | 'search'
  | 'origin'
  | 'templatePrefix'
  | 'templateRegex'
  | 'callId'
  | 'traceId';
/** Filters picked from the values the backend lists (CallResource values/<kind>). */
type PickKey = 'agentId' | 'server' | 'method' | 'status' | 'identification' | 'template';

/** The multiple credentials filter: any, yes (true) or no (false). */
const CREDENTIALS_OPTIONS = [
  { label: 'Any', value: 'any' },
  { label: 'Multiple', value: 'yes' },
  { label: 'Single', value: 'no' },
];

/** The values of a multi-value field, as drop-down values. */
const asList = (v: unknown): string[] =>
  v === undefined || v === null || v === '' ? [] : (Array.isArray(v) ? v : [v]).map(String);
type NumberKey = 'clientPort' | 'serverPort' | 'minDurationMs' | 'maxDurationMs' | 'limit' | 'topN' | 'maxDepth';

const LABEL = 14;

/**
 * Query editor: a query type picker, then the fields of that type. Limits
 * are always shown with their default, so no query is unbounded.
 */
export function QueryEditor({ query, onChange, onRunQuery, data, datasource, range }: Props) {
  const [showSQL, setShowSQL] = useState(false);
  const queryType: QueryType = query.queryType ?? 'calls';

  const update = (patch: Partial<OrbweaverQuery>, run = false) => {
    onChange({ ...query, ...patch });
    if (run) {
      onRunQuery();
    }
  };

  const text = (key: TextKey, label: string, placeholder: string, width = 20) => (
    <InlineField label={label} labelWidth={LABEL}>
      <Input
        id={`query-editor-${key}`}
        aria-label={label}
        width={width}
        placeholder={placeholder}
        value={asList(query[key]).join(', ')}
        onChange={(e: ChangeEvent<HTMLInputElement>) => update({ [key]: e.target.value || undefined })}
        onBlur={onRunQuery}
      />
    </InlineField>
  );

  const num = (key: NumberKey, label: string, placeholder: string, width = 12) => (
    <InlineField label={label} labelWidth={LABEL}>
      <Input
        id={`query-editor-${key}`}
        aria-label={label}
        type="number"
        width={width}
        placeholder={placeholder}
        value={query[key] ?? ''}
        onChange={(e: ChangeEvent<HTMLInputElement>) =>
          update({ [key]: e.target.value === '' ? undefined : Number(e.target.value) })
        }
        onBlur={onRunQuery}
      />
    </InlineField>
  );

  /** Loads the options of a drop-down when it opens, filtered by what was typed. */
  const loader = (kind: string) => async (input: string) => {
    const values = await datasource.getValues(kind, range?.from.valueOf(), range?.to.valueOf());
    const needle = input.toLowerCase();
    return values
      .filter((v) => v.text.toLowerCase().includes(needle) || v.value.toLowerCase().includes(needle))
      .map((v) => ({ label: v.text, value: v.value }));
  };

  /** A multi-value drop-down; typed values ($variables) are accepted too. */
  const pick = (key: PickKey, label: string, kind: string, placeholder: string, width = 30) => (
    <InlineField label={label} labelWidth={LABEL}>
      <MultiCombobox
        id={`query-editor-${key}`}
        aria-labelledby={`query-editor-${key}-label`}
        width={width}
        placeholder={placeholder}
        createCustomValue
        isClearable
        options={loader(kind)}
        value={asList(query[key])}
        onChange={(opts) => {
          const values = opts.map((o) => (key === 'status' && /^\d+$/.test(o.value) ? Number(o.value) : o.value));
          update({ [key]: values.length ? values : undefined }, true);
        }}
      />
    </InlineField>
  );

  const filters = (
    <>
      <InlineFieldRow>
        {pick('agentId', 'Agent', 'agents', 'all agents')}
        {text('clientIp', 'Client IP', 'ip or CIDR, …')}
        {num('clientPort', 'Client port', 'any')}
      </InlineFieldRow>
      <InlineFieldRow>
        {pick('server', 'Server', 'servers', 'any ip:port')}
        {text('serverIp', 'Server IP', 'ip or CIDR, …')}
        {num('serverPort', 'Server port', 'any')}
        {text('serverName', 'Server name', 'Host header, …')}
      </InlineFieldRow>
      <InlineFieldRow>
        {pick('method', 'Method', 'methods', 'any', 20)}
        {text('pathPrefix', 'Path prefix', '/api/')}
        {text('pathRegex', 'Path regex', '^/api/v[0-9]+/')}
        {text('search', 'Path contains', 'free text')}
      </InlineFieldRow>
      <InlineFieldRow>
        {pick('status', 'Status', 'statuses', 'any', 20)}
        <InlineField label="Status class" labelWidth={LABEL}>
          <MultiCombobox
            id="query-editor-statusClass"
            width={24}
            placeholder="any"
            isClearable
            options={options(STATUS_CLASSES)}
            value={asList(query.statusClass)}
            onChange={(opts) => update({ statusClass: opts.length ? opts.map((o) => o.value) : undefined }, true)}
          />
        </InlineField>
        {num('minDurationMs', 'Min ms', 'none')}
        {num('maxDurationMs', 'Max ms', 'none')}
      </InlineFieldRow>
      <InlineFieldRow>
        {pick('template', 'Template', 'templates', 'any route template')}
        {text('templatePrefix', 'Template prefix', '/api/')}
        {text('templateRegex', 'Template regex', '[{]id[}]$')}
      </InlineFieldRow>
      <InlineFieldRow>
        {pick('identification', 'Identification', 'identifications', 'anyone', 24)}
        {text('origin', 'Origin IP', 'ip or CIDR, …')}
        <InlineField label="Token problem" labelWidth={LABEL} tooltip="JWT not yet valid or expired at capture time">
          <MultiCombobox
            id="query-editor-tokenProblem"
            width={26}
            placeholder="any"
            isClearable
            options={options(TOKEN_PROBLEMS)}
            value={asList(query.tokenProblem)}
            onChange={(opts) => update({ tokenProblem: opts.length ? opts.map((o) => o.value) : undefined }, true)}
          />
        </InlineField>
        <InlineField label="Credentials" labelWidth={LABEL}>
          <RadioButtonGroup
            options={CREDENTIALS_OPTIONS}
            value={query.multipleCredentials === undefined ? 'any' : query.multipleCredentials ? 'yes' : 'no'}
            onChange={(v) => update({ multipleCredentials: v === 'any' ? undefined : v === 'yes' }, true)}
          />
        </InlineField>
      </InlineFieldRow>
    </>
  );

  const exact = (
    <InlineField
      label="Exact"
      labelWidth={LABEL}
      tooltip="Read the stored calls even where the per-minute rollups cover the query: exact percentiles (rollup percentiles are within 3%), slower over long ranges"
    >
      <InlineSwitch
        id="query-editor-exact"
        value={!!query.exact}
        onChange={(e) => update({ exact: e.currentTarget.checked || undefined }, true)}
      />
    </InlineField>
  );

  let body: React.ReactNode;
  switch (queryType) {
    case 'calls':
      body = (
        <>
          {filters}
          <InlineFieldRow>
            <InlineField label="Format" labelWidth={LABEL}>
              <RadioButtonGroup
                options={[
                  { label: 'Table', value: 'table' },
                  { label: 'Logs', value: 'logs' },
                ]}
                value={query.format ?? 'table'}
                onChange={(v) => update({ format: v as 'table' | 'logs' }, true)}
              />
            </InlineField>
            <InlineField label="Sort" labelWidth={LABEL} disabled={!!query.live}>
              <Combobox
                id="query-editor-sort"
                width={18}
                options={options(SORTS)}
                value={query.sort ?? 'time_desc'}
                onChange={(v) => update({ sort: v.value }, true)}
              />
            </InlineField>
            {num('limit', 'Limit', String(DEFAULT_CALLS_LIMIT))}
            <InlineField
              label="Live"
              labelWidth={LABEL}
              tooltip="Follow new calls as they are stored (Grafana Live), newest last; the limit caps the rows kept"
            >
              <InlineSwitch
                id="query-editor-live"
                value={!!query.live}
                onChange={(e) => update({ live: e.currentTarget.checked || undefined }, true)}
              />
            </InlineField>
          </InlineFieldRow>
        </>
      );
      break;
    case 'stats':
      body = (
        <>
          {filters}
          <InlineFieldRow>
            <InlineField label="Metrics" labelWidth={LABEL}>
              <MultiCombobox
                id="query-editor-metrics"
                width={40}
                options={options(METRICS)}
                value={query.metrics ?? ['rate']}
                onChange={(v) => update({ metrics: v.map((o) => o.value) }, true)}
              />
            </InlineField>
            <InlineField label="Group by" labelWidth={LABEL}>
              <MultiCombobox
                id="query-editor-groupBy"
                width={30}
                placeholder="no grouping"
                options={options(DIMENSIONS)}
                value={query.groupBy ?? []}
                onChange={(v) => update({ groupBy: v.map((o) => o.value) }, true)}
              />
            </InlineField>
            {num('topN', 'Top N', String(DEFAULT_TOP_N))}
            {exact}
          </InlineFieldRow>
        </>
      );
      break;
    case 'serviceMap':
      body = (
        <>
          {filters}
          <InlineFieldRow>
            {num('limit', 'Max edges', String(DEFAULT_SERVICE_MAP_EDGES))}
            {exact}
          </InlineFieldRow>
        </>
      );
      break;
    case 'callTree':
      body = (
        <InlineFieldRow>
          {text('callId', 'Call id', 'e.g. 12345')}
          {text('traceId', 'or trace id', '32 hex digits', 36)}
          {num('maxDepth', 'Max depth', String(DEFAULT_TREE_DEPTH))}
        </InlineFieldRow>
      );
      break;
    case 'concurrent':
      body = (
        <InlineFieldRow>
          {text('callId', 'Call id', 'e.g. 12345')}
          {num('limit', 'Limit', String(DEFAULT_CALLS_LIMIT))}
        </InlineFieldRow>
      );
      break;
    case 'agents':
      body = (
        <InlineFieldRow>
          <InlineField label="View" labelWidth={LABEL}>
            <RadioButtonGroup
              options={[
                { label: 'Agents', value: 'table' },
                { label: 'Heartbeats', value: 'heartbeats' },
              ]}
              value={query.agentView ?? 'table'}
              onChange={(v) => update({ agentView: v as 'table' | 'heartbeats' }, true)}
            />
          </InlineField>
          {pick('agentId', 'Agent', 'agents', 'all agents')}
        </InlineFieldRow>
      );
      break;
  }

  const executed = data?.series?.find((f) => f.meta?.executedQueryString)?.meta?.executedQueryString;

  return (
    <Stack direction="column" gap={1}>
      <InlineField label="Query type" labelWidth={LABEL}>
        <RadioButtonGroup
          options={QUERY_TYPES.map((t) => ({ label: t.label, value: t.value, description: t.description }))}
          value={queryType}
          onChange={(v) => update({ queryType: v as QueryType }, true)}
        />
      </InlineField>
      {body}
      <div>
        <Button variant="secondary" size="sm" fill="text" onClick={() => setShowSQL(!showSQL)}>
          {showSQL ? 'Hide SQL' : 'Show SQL'}
        </Button>
        {showSQL && <pre data-testid="executed-sql">{executed ?? 'Run the query to see the SQL it executes.'}</pre>}
      </div>
    </Stack>
  );
}
