import { CoreApp, DataSourceInstanceSettings, MetricFindValue, ScopedVars } from '@grafana/data';
import { DataSourceWithBackend, getTemplateSrv } from '@grafana/runtime';

import { DEFAULT_QUERY, OrbweaverOptions, OrbweaverQuery } from './types';

/** String fields of a query that may hold template variables. */
const TEMPLATED_FIELDS = [
  'agentId',
  'clientIp',
  'serverIp',
  'serverName',
  'method',
  'pathPrefix',
  'pathRegex',
  'search',
  'statusClass',
  'callId',
  'traceId',
] as const;

/** Kinds of values the backend lists (CallResource values/<kind>). */
export const VALUE_KINDS = ['agents', 'servers', 'methods', 'statuses'];

export class DataSource extends DataSourceWithBackend<OrbweaverQuery, OrbweaverOptions> {
  constructor(instanceSettings: DataSourceInstanceSettings<OrbweaverOptions>) {
    super(instanceSettings);
  }

  getDefaultQuery(_: CoreApp): Partial<OrbweaverQuery> {
    return DEFAULT_QUERY;
  }

  applyTemplateVariables(query: OrbweaverQuery, scopedVars: ScopedVars): OrbweaverQuery {
    const srv = getTemplateSrv();
    const out: OrbweaverQuery = { ...query };
    for (const field of TEMPLATED_FIELDS) {
      const v = query[field];
      if (typeof v === 'string' && v !== '') {
        out[field] = srv.replace(v, scopedVars);
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
   * Template variable values. The variable query is one of "agents",
   * "servers", "methods", "statuses"; values come from the dashboard's time range.
   */
  async metricFindQuery(
    query: string | { kind?: string },
    options?: { range?: { from: { valueOf(): number }; to: { valueOf(): number } } }
  ): Promise<MetricFindValue[]> {
    const kind = (typeof query === 'string' ? query : (query?.kind ?? '')).trim();
    if (!VALUE_KINDS.includes(kind)) {
      throw new Error(`variable query must be one of ${VALUE_KINDS.join(', ')}`);
    }
    const params: Record<string, number> = {};
    if (options?.range) {
      params.from = options.range.from.valueOf();
      params.to = options.range.to.valueOf();
    }
    const values: Array<{ value: string; text: string }> = await this.getResource(`values/${kind}`, params);
    return values.map((v) => ({ text: v.text, value: v.value }));
  }
}
