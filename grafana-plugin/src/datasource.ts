import {
  CoreApp,
  DataQueryRequest,
  DataQueryResponse,
  DataSourceInstanceSettings,
  LiveChannelScope,
  MetricFindValue,
  ScopedVars,
} from '@grafana/data';
import { DataSourceWithBackend, getGrafanaLiveSrv, getTemplateSrv } from '@grafana/runtime';
import { merge, Observable } from 'rxjs';

import {
  DEFAULT_CALLS_LIMIT,
  DEFAULT_QUERY,
  FILTER_FIELDS,
  MULTI_FIELDS,
  OrbweaverOptions,
  OrbweaverQuery,
} from './types';

/** Single-value string fields of a query that may hold template variables. */
const TEMPLATED_FIELDS = [
  'pathPrefix',
  'pathRegex',
  'search',
  'templatePrefix',
  'templateRegex',
  'callId',
  'traceId',
] as const;

/** Kinds of values the backend lists (CallResource values/<kind>). */
export const VALUE_KINDS = ['agents', 'servers', 'methods', 'statuses', 'templates', 'identifications'];

/** One entry of a values/<kind> list. */
export interface Value {
  value: string;
  text: string;
}

/** Separates the values of a multi-value variable while it is expanded. */
const SEP = '\u001f';

/**
 * True for a calls query that should follow new calls live: its Live
 * toggle is on, or Explore's own Live button is (request.liveStreaming).
 */
export function isLive(q: OrbweaverQuery, liveStreaming = false): boolean {
  return !q.hide && (!!q.live || liveStreaming) && (q.queryType ?? 'calls') === 'calls';
}

/**
 * The query a live tail runs: the calls filters and the format. It is the
 * channel's data, so the same filters share one channel.
 */
export function tailModel(q: OrbweaverQuery): Partial<OrbweaverQuery> {
  const model: Record<string, unknown> = { queryType: 'calls', format: q.format ?? 'table' };
  for (const f of FILTER_FIELDS) {
    if (q[f] !== undefined) {
      model[f] = q[f];
    }
  }
  return model as Partial<OrbweaverQuery>;
}

/** JSON with sorted object keys, so equal models give equal text. */
function stableJSON(v: unknown): string {
  if (Array.isArray(v)) {
    return `[${v.map(stableJSON).join(',')}]`;
  }
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJSON(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** A 53-bit hash (cyrb53) of s, in base 36. */
function hash(s: string): string {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
}

/** The Grafana Live path of the live tail of q: tail/<hash of its filters>. */
export function tailPath(q: OrbweaverQuery): string {
  return `tail/${hash(stableJSON(tailModel(q)))}`;
}

export class DataSource extends DataSourceWithBackend<OrbweaverQuery, OrbweaverOptions> {
  constructor(instanceSettings: DataSourceInstanceSettings<OrbweaverOptions>) {
    super(instanceSettings);
  }

  getDefaultQuery(_: CoreApp): Partial<OrbweaverQuery> {
    return DEFAULT_QUERY;
  }

  /**
   * Replaces template variables. Multi-value filters become arrays: a
   * variable with several values (or "All") adds each value.
   */
  applyTemplateVariables(query: OrbweaverQuery, scopedVars: ScopedVars): OrbweaverQuery {
    const srv = getTemplateSrv();
    const out: OrbweaverQuery = { ...query };
    for (const field of TEMPLATED_FIELDS) {
      const v = query[field];
      if (typeof v === 'string' && v !== '') {
        out[field] = srv.replace(v, scopedVars);
      }
    }
    const expand = (v: string): string[] =>
      srv
        .replace(v, scopedVars, (value: unknown) => (Array.isArray(value) ? value.join(SEP) : String(value)))
        .split(SEP);
    for (const field of MULTI_FIELDS) {
      const v = query[field];
      if (v === undefined) {
        continue;
      }
      const values: Array<string | number> = [];
      for (const item of Array.isArray(v) ? v : [v]) {
        const expanded = typeof item === 'string' ? expand(item) : [item];
        for (const e of expanded) {
          const x = field === 'status' && typeof e === 'string' && /^\d+$/.test(e) ? Number(e) : e;
          if (x !== '' && !values.includes(x)) {
            values.push(x);
          }
        }
      }
      if (values.length > 0) {
        (out as unknown as Record<string, unknown>)[field] = values;
      } else {
        delete out[field];
      }
    }
    return out;
  }

  /** Call trees need a call or trace id, concurrent calls a call id; other queries always run (they are bounded). */
  filterQuery(query: OrbweaverQuery): boolean {
    if (query.hide) {
      return false;
    }
    if (query.queryType === 'callTree') {
      return !!query.callId || !!query.traceId;
    }
    if (query.queryType === 'concurrent') {
      return !!query.callId;
    }
    return true;
  }

  /**
   * Runs the queries: live calls queries subscribe to their tail channel
   * (ds/<uid>/tail/<hash>), the others go to the backend's QueryData.
   */
  query(request: DataQueryRequest<OrbweaverQuery>): Observable<DataQueryResponse> {
    const liveMode = !!request.liveStreaming;
    const live = request.targets.filter((t) => isLive(t, liveMode));
    if (live.length === 0) {
      return super.query(request);
    }
    const streams: Array<Observable<DataQueryResponse>> = live.map((t) => {
      const q = this.applyTemplateVariables(t, request.scopedVars);
      return getGrafanaLiveSrv().getDataStream({
        key: `${this.uid}-${t.refId}`,
        addr: { scope: LiveChannelScope.DataSource, stream: this.uid, path: tailPath(q), data: tailModel(q) },
        buffer: { maxLength: q.limit ?? DEFAULT_CALLS_LIMIT },
      });
    });
    const rest = request.targets.filter((t) => !isLive(t, liveMode));
    if (rest.length > 0) {
      streams.push(super.query({ ...request, targets: rest }));
    }
    return merge(...streams);
  }

  /** Lists values of one kind seen in [from, to] (Unix ms), for drop-downs and variables. */
  async getValues(kind: string, from?: number, to?: number): Promise<Value[]> {
    const params: Record<string, number> = {};
    if (from !== undefined && to !== undefined) {
      params.from = from;
      params.to = to;
    }
    return this.getResource(`values/${kind}`, params);
  }

  /**
   * Template variable values. The variable query is one of "agents",
   * "servers", "methods", "statuses", "templates", "identifications"; values
   * come from the dashboard's time range.
   */
  async metricFindQuery(
    query: string | { kind?: string },
    options?: { range?: { from: { valueOf(): number }; to: { valueOf(): number } } }
  ): Promise<MetricFindValue[]> {
    const kind = (typeof query === 'string' ? query : (query?.kind ?? '')).trim();
    if (!VALUE_KINDS.includes(kind)) {
      throw new Error(`variable query must be one of ${VALUE_KINDS.join(', ')}`);
    }
    const values = await this.getValues(kind, options?.range?.from.valueOf(), options?.range?.to.valueOf());
    return values.map((v) => ({ text: v.text, value: v.value }));
  }
}
