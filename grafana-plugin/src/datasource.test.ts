import { of } from 'rxjs';
import { LiveChannelScope } from '@grafana/data';

import { DataSource, tailPath } from './datasource';

/** Template variables: $agent has one value, $method and $status several. */
const vars: Record<string, string | string[]> = {
  $agent: '11111111-1111-4111-8111-111111111111',
  $method: ['GET', 'POST'],
  $status: ['404', '503'],
  $user: ['alice', 'bob'],
  $route: ['/api/orders', '/api/orders/{id}'],
};
const replace = jest.fn((v: string, _scoped?: unknown, format?: unknown) => {
  const value = vars[v];
  if (value === undefined) {
    return v;
  }
  if (typeof format === 'function') {
    return format(value);
  }
  return Array.isArray(value) ? `{${value.join(',')}}` : value;
});
const getDataStream = jest.fn();

jest.mock('@grafana/runtime', () => ({
  ...jest.requireActual('@grafana/runtime'),
  getTemplateSrv: () => ({ replace }),
  getGrafanaLiveSrv: () => ({ getDataStream }),
}));

function ds() {
  return new DataSource({ id: 1, uid: 'orb', name: 'Orbweaver', jsonData: {}, meta: {} } as any);
}

describe('DataSource', () => {
  it('defaults to a bounded calls query', () => {
    expect(ds().getDefaultQuery('explore' as any)).toEqual({
      queryType: 'calls',
      format: 'table',
      sort: 'time_desc',
      limit: 1000,
    });
  });

  it('replaces template variables in string fields only', () => {
    const q = ds().applyTemplateVariables(
      { refId: 'A', agentId: '$agent', serverPort: 80, metrics: ['rate'], pathPrefix: '$agent/' },
      {}
    );
    expect(q).toEqual({
      refId: 'A',
      agentId: ['11111111-1111-4111-8111-111111111111'],
      serverPort: 80,
      metrics: ['rate'],
      pathPrefix: '$agent/',
    });
  });

  it('expands multi-value variables into arrays', () => {
    const q = ds().applyTemplateVariables(
      { refId: 'A', method: ['$method', 'PUT', 'GET'], status: ['$status', 500], statusClass: '', server: [] },
      {}
    );
    expect(q).toEqual({ refId: 'A', method: ['GET', 'POST', 'PUT'], status: [404, 503, 500] });
  });

  it('expands variables in the identification, origin, template and token filters', () => {
    const q = ds().applyTemplateVariables(
      {
        refId: 'A',
        identification: '$user',
        origin: ['203.0.113.0/24'],
        template: ['$route', '/health'],
        templatePrefix: '$agent',
        templateRegex: '^/api/',
        tokenProblem: 'expired',
        multipleCredentials: false,
      },
      {}
    );
    expect(q).toEqual({
      refId: 'A',
      identification: ['alice', 'bob'],
      origin: ['203.0.113.0/24'],
      template: ['/api/orders', '/api/orders/{id}', '/health'],
      templatePrefix: '11111111-1111-4111-8111-111111111111',
      templateRegex: '^/api/',
      tokenProblem: ['expired'],
      multipleCredentials: false,
    });
  });

  it('lists templates and identifications for variables', async () => {
    const d = ds();
    const getResource = jest
      .spyOn(d, 'getResource')
      .mockResolvedValue([{ value: '/api/orders/{id}', text: '/api/orders/{id}' }]);
    const range = { from: { valueOf: () => 1000 }, to: { valueOf: () => 2000 } };
    await expect(d.metricFindQuery(' templates ', { range })).resolves.toEqual([
      { value: '/api/orders/{id}', text: '/api/orders/{id}' },
    ]);
    expect(getResource).toHaveBeenCalledWith('values/templates', { from: 1000, to: 2000 });
    await d.metricFindQuery({ kind: 'identifications' }, { range });
    expect(getResource).toHaveBeenLastCalledWith('values/identifications', { from: 1000, to: 2000 });
  });

  it('puts the new filters in the tail channel', () => {
    const base = { refId: 'A', template: ['/api/orders'] };
    expect(tailPath(base)).not.toEqual(tailPath({ ...base, identification: ['alice'] }));
    expect(tailPath(base)).not.toEqual(tailPath({ ...base, multipleCredentials: true }));
    expect(tailPath(base)).not.toEqual(tailPath({ ...base, templateRegex: 'x' }));
    expect(tailPath(base)).not.toEqual(tailPath({ ...base, origin: '10.0.0.1', tokenProblem: ['expired'] }));
  });

  it('skips call trees without a call id', () => {
    const d = ds();
    expect(d.filterQuery({ refId: 'A', queryType: 'callTree' })).toBe(false);
    expect(d.filterQuery({ refId: 'A', queryType: 'callTree', callId: '1' })).toBe(true);
    expect(d.filterQuery({ refId: 'A', queryType: 'callTree', traceId: '0af7651916cd43dd8448eb211c80319c' })).toBe(
      true
    );
    expect(d.filterQuery({ refId: 'A', queryType: 'concurrent' })).toBe(false);
    expect(d.filterQuery({ refId: 'A', queryType: 'calls' })).toBe(true);
    expect(d.filterQuery({ refId: 'A', hide: true })).toBe(false);
  });

  it('lists template variable values from the backend', async () => {
    const d = ds();
    const getResource = jest.spyOn(d, 'getResource').mockResolvedValue([{ value: 'id-1', text: 'edge-1' }]);
    const range = { from: { valueOf: () => 1000 }, to: { valueOf: () => 2000 } };
    await expect(d.metricFindQuery('agents', { range })).resolves.toEqual([{ value: 'id-1', text: 'edge-1' }]);
    expect(getResource).toHaveBeenCalledWith('values/agents', { from: 1000, to: 2000 });
    await expect(d.metricFindQuery('passwords')).rejects.toThrow('variable query must be one of');
  });

  it('sends live calls queries to their Grafana Live tail channel', () => {
    const d = ds();
    getDataStream.mockReset();
    getDataStream.mockReturnValue(of({ data: [], key: 'live' }));
    const backend = jest
      .spyOn(Object.getPrototypeOf(DataSource.prototype), 'query')
      .mockReturnValue(of({ data: [], key: 'backend' }));
    const targets = [
      { refId: 'A', queryType: 'calls' as const, live: true, method: '$method', format: 'logs' as const, limit: 50 },
      { refId: 'B', queryType: 'stats' as const },
    ];
    const keys: string[] = [];
    d.query({ targets, scopedVars: {} } as any).subscribe((r) => keys.push(r.key!));
    expect(keys.sort()).toEqual(['backend', 'live']);
    expect(getDataStream).toHaveBeenCalledTimes(1);
    const opts = getDataStream.mock.calls[0][0];
    const model = { queryType: 'calls', format: 'logs', method: ['GET', 'POST'] };
    expect(opts.addr).toEqual({ scope: LiveChannelScope.DataSource, stream: 'orb', path: opts.addr.path, data: model });
    expect(opts.addr.path).toMatch(/^tail\/[a-z0-9]+$/);
    expect(opts.buffer).toEqual({ maxLength: 50 });
    // Only B went to QueryData.
    expect(backend.mock.calls[0][0]).toMatchObject({ targets: [{ refId: 'B' }] });
    backend.mockRestore();
  });

  it('names a tail channel after its filters only', () => {
    const a = tailPath({ refId: 'A', method: ['GET'], serverPort: 80, limit: 5, sort: 'time_asc' });
    expect(a).toEqual(tailPath({ refId: 'Z', serverPort: 80, method: ['GET'] }));
    expect(a).not.toEqual(tailPath({ refId: 'A', method: ['POST'], serverPort: 80 }));
    expect(a).not.toEqual(tailPath({ refId: 'A', method: ['GET'], serverPort: 80, format: 'logs' }));
  });

  it('queries the backend when no query is live', () => {
    const d = ds();
    getDataStream.mockReset();
    const backend = jest.spyOn(Object.getPrototypeOf(DataSource.prototype), 'query').mockReturnValue(of({ data: [] }));
    d.query({ targets: [{ refId: 'A', queryType: 'stats', live: true }], scopedVars: {} } as any).subscribe();
    expect(getDataStream).not.toHaveBeenCalled();
    expect(backend).toHaveBeenCalledTimes(1);
    backend.mockRestore();
  });
});
