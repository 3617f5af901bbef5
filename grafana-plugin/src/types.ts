import { DataSourceJsonData } from '@grafana/data';
import { DataQuery } from '@grafana/schema';

/** Query types, the values of OrbweaverQuery.queryType (see pkg/querybuilder). */
export type QueryType = 'calls' | 'stats' | 'serviceMap' | 'callTree' | 'concurrent' | 'agents';

export const QUERY_TYPES: Array<{ value: QueryType; label: string; description: string }> = [
  { value: 'calls', label: 'Calls', description: 'Captured calls as a table or log lines' },
  { value: 'stats', label: 'Stats', description: 'Rate, errors, latency percentiles and bytes over time' },
  { value: 'serviceMap', label: 'Service map', description: 'Who calls whom (node graph)' },
  { value: 'callTree', label: 'Call tree', description: 'One call and the calls it caused (trace view)' },
  {
    value: 'concurrent',
    label: 'Concurrent calls',
    description: 'Calls to the same server ip:port overlapping one call',
  },
  { value: 'agents', label: 'Agents', description: 'Agents and their heartbeats' },
];

export const METRICS = ['rate', 'error_rate', 'p50', 'p90', 'p95', 'p99', 'bytes'] as const;
export const DIMENSIONS = [
  'server',
  'client',
  'host',
  'method',
  'status',
  'agent',
  'template',
  'identification',
  'origin',
] as const;
/** JWT problems at capture time (the tokenProblem filter). */
export const TOKEN_PROBLEMS = ['not_yet_valid', 'expired'] as const;
export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'none'] as const;
export const SORTS = ['time_desc', 'time_asc', 'duration_desc', 'duration_asc'] as const;

/** Defaults the backend applies too; shown in the editor so limits are visible. */
export const DEFAULT_CALLS_LIMIT = 1000;
export const DEFAULT_TOP_N = 10;
export const DEFAULT_SERVICE_MAP_EDGES = 200;
export const DEFAULT_TREE_DEPTH = 5;

/** A filter value: one value, or several (any of them matches). */
export type Multi = string | string[];

/** Filters that take several values. */
export const MULTI_FIELDS = [
  'agentId',
  'clientIp',
  'serverIp',
  'server',
  'serverName',
  'method',
  'status',
  'statusClass',
  'identification',
  'origin',
  'template',
  'tokenProblem',
] as const;

/** Filters of the calls query, sent to the live tail. */
export const FILTER_FIELDS = [
  ...MULTI_FIELDS,
  'clientPort',
  'serverPort',
  'pathPrefix',
  'pathRegex',
  'search',
  'minDurationMs',
  'maxDurationMs',
  'templatePrefix',
  'templateRegex',
  'multipleCredentials',
] as const;

/** The query model, shared with the backend (pkg/querybuilder.Query). */
export interface OrbweaverQuery extends DataQuery {
  queryType?: QueryType;

  // Filters (calls, stats, service map). Fields typed `Multi` take one value
  // or several (any of them matches); template variables with several
  // values expand into arrays (DataSource.applyTemplateVariables).
  agentId?: Multi;
  clientIp?: Multi;
  clientPort?: number;
  serverIp?: Multi;
  serverPort?: number;
  /** "ip:port" servers, as the servers drop-down lists them. */
  server?: Multi;
  serverName?: Multi;
  method?: Multi;
  pathPrefix?: string;
  pathRegex?: string;
  search?: string;
  status?: number | Array<number | string>;
  statusClass?: Multi;
  minDurationMs?: number;
  maxDurationMs?: number;
  /** Exact identifications: Basic-auth login, else the JWT `sub`. */
  identification?: Multi;
  /** Original client addresses or CIDR prefixes (X-Forwarded-For, Forwarded, else client IP). */
  origin?: Multi;
  /** Exact route templates, as values/templates lists them. */
  template?: Multi;
  templatePrefix?: string;
  templateRegex?: string;
  /** Calls whose JWT had any of these problems at capture time. */
  tokenProblem?: Multi;
  /** true: several credentials; false: one or none; unset: no filter. */
  multipleCredentials?: boolean;

  // Calls.
  format?: 'table' | 'logs';
  sort?: string;
  limit?: number;
  /** Follow new calls as they are stored (Grafana Live), instead of querying the time range. */
  live?: boolean;

  // Stats.
  metrics?: string[];
  groupBy?: string[];
  topN?: number;
  /**
   * Stats and service map: read the stored calls even where the per-minute
   * rollups cover the query, for exact percentiles (rollup percentiles are
   * within 1/33 of them) at the cost of speed.
   */
  exact?: boolean;

  // Call tree and concurrent calls.
  callId?: string;
  /** Call tree root when callId is empty: the first call carrying this W3C trace id. */
  traceId?: string;
  maxDepth?: number;

  // Agents.
  agentView?: 'table' | 'heartbeats';
}

export const DEFAULT_QUERY: Partial<OrbweaverQuery> = {
  queryType: 'calls',
  format: 'table',
  sort: 'time_desc',
  limit: DEFAULT_CALLS_LIMIT,
};

/** Non-secret settings, named like Grafana's PostgreSQL datasource. */
export interface OrbweaverOptions extends DataSourceJsonData {
  database?: string;
  sslmode?: string;
  queryTimeoutSeconds?: number;
  maxOpenConns?: number;
}

/** Secret settings: sent to the backend only. */
export interface OrbweaverSecureJsonData {
  password?: string;
}
