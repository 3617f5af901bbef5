import React, { ChangeEvent, useState } from 'react';
import { QueryEditorProps, SelectableValue } from '@grafana/data';
import { Button, InlineField, InlineFieldRow, Input, MultiSelect, RadioButtonGroup, Select, Stack } from '@grafana/ui';

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
} from '../types';

type Props = QueryEditorProps<DataSource, OrbweaverQuery, OrbweaverOptions>;

const options = (values: readonly string[]): Array<SelectableValue<string>> =>
  values.map((v) => ({ label: v, value: v }));

type TextKey =
  | 'agentId'
  | 'clientIp'
  | 'serverIp'
  | 'serverName'
  | 'method'
  | 'pathPrefix'
  | 'pathRegex'
  | 'search'
  | 'callId'
  | 'traceId';
type NumberKey =
  'clientPort' | 'serverPort' | 'status' | 'minDurationMs' | 'maxDurationMs' | 'limit' | 'topN' | 'maxDepth';

const LABEL = 14;

/**
 * Query editor: a query type picker, then the fields of that type. Limits
 * are always shown with their default, so no query is unbounded.
 */
export function QueryEditor({ query, onChange, onRunQuery, data }: Props) {
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
        value={query[key] ?? ''}
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

  const filters = (
    <>
      <InlineFieldRow>
        {text('agentId', 'Agent', 'agent UUID or $agent')}
        {text('clientIp', 'Client IP', 'ip or CIDR')}
        {num('clientPort', 'Client port', 'any')}
      </InlineFieldRow>
      <InlineFieldRow>
        {text('serverIp', 'Server IP', 'ip or CIDR')}
        {num('serverPort', 'Server port', 'any')}
        {text('serverName', 'Server name', 'Host header')}
      </InlineFieldRow>
      <InlineFieldRow>
        {text('method', 'Method', 'GET', 12)}
        {text('pathPrefix', 'Path prefix', '/api/')}
        {text('pathRegex', 'Path regex', '^/api/v[0-9]+/')}
        {text('search', 'Path contains', 'free text')}
      </InlineFieldRow>
      <InlineFieldRow>
        {num('status', 'Status', 'any')}
        <InlineField label="Status class" labelWidth={LABEL}>
          <Select
            inputId="query-editor-statusClass"
            aria-label="Status class"
            width={12}
            isClearable
            options={options(STATUS_CLASSES)}
            value={query.statusClass ?? null}
            onChange={(v) => update({ statusClass: v?.value }, true)}
          />
        </InlineField>
        {num('minDurationMs', 'Min ms', 'none')}
        {num('maxDurationMs', 'Max ms', 'none')}
      </InlineFieldRow>
    </>
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
            <InlineField label="Sort" labelWidth={LABEL}>
              <Select
                inputId="query-editor-sort"
                aria-label="Sort"
                width={18}
                options={options(SORTS)}
                value={query.sort ?? 'time_desc'}
                onChange={(v) => update({ sort: v.value }, true)}
              />
            </InlineField>
            {num('limit', 'Limit', String(DEFAULT_CALLS_LIMIT))}
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
              <MultiSelect
                inputId="query-editor-metrics"
                aria-label="Metrics"
                width={40}
                options={options(METRICS)}
                value={query.metrics ?? ['rate']}
                onChange={(v) => update({ metrics: v.map((o) => o.value!) }, true)}
              />
            </InlineField>
            <InlineField label="Group by" labelWidth={LABEL}>
              <MultiSelect
                inputId="query-editor-groupBy"
                aria-label="Group by"
                width={30}
                options={options(DIMENSIONS)}
                value={query.groupBy ?? []}
                onChange={(v) => update({ groupBy: v.map((o) => o.value!) }, true)}
              />
            </InlineField>
            {num('topN', 'Top N', String(DEFAULT_TOP_N))}
          </InlineFieldRow>
        </>
      );
      break;
    case 'serviceMap':
      body = (
        <>
          {filters}
          <InlineFieldRow>{num('limit', 'Max edges', String(DEFAULT_SERVICE_MAP_EDGES))}</InlineFieldRow>
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
          {text('agentId', 'Agent', 'all agents')}
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
