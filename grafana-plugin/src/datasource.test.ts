import { DataSource } from './datasource';

const replace = jest.fn((v: string) => v.replace('$agent', '11111111-1111-4111-8111-111111111111'));

jest.mock('@grafana/runtime', () => ({
  ...jest.requireActual('@grafana/runtime'),
  getTemplateSrv: () => ({ replace }),
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
    const q = ds().applyTemplateVariables({ refId: 'A', agentId: '$agent', serverPort: 80, metrics: ['rate'] }, {});
    expect(q).toEqual({
      refId: 'A',
      agentId: '11111111-1111-4111-8111-111111111111',
      serverPort: 80,
      metrics: ['rate'],
    });
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
});
