import React from 'react';
import { act, cleanup, fireEvent, render, screen, waitFor } from '@testing-library/react';

import { QueryEditor } from './QueryEditor';
import { DataSource } from '../datasource';
import { OrbweaverQuery } from '../types';

const getValues = jest.fn();

function setup(query: Partial<OrbweaverQuery> = {}, executedSQL?: string) {
  getValues.mockReset();
  getValues.mockImplementation(async (kind: string) =>
    kind === 'templates'
      ? [
          { value: '/api/orders', text: '/api/orders' },
          { value: '/api/orders/{id}', text: '/api/orders/{id}' },
        ]
      : [
          { value: '10.0.0.2:8080', text: '10.0.0.2:8080' },
          { value: '10.0.0.3:9090', text: '10.0.0.3:9090' },
        ]
  );
  const range = { from: { valueOf: () => 1000 }, to: { valueOf: () => 2000 } } as any;
  const onChange = jest.fn();
  const onRunQuery = jest.fn();
  const data = executedSQL
    ? ({ series: [{ fields: [], length: 0, meta: { executedQueryString: executedSQL } }] } as any)
    : undefined;
  const view = render(
    <QueryEditor
      datasource={{ getValues } as unknown as DataSource}
      range={range}
      query={{ refId: 'A', ...query }}
      onChange={onChange}
      onRunQuery={onRunQuery}
      data={data}
    />
  );
  return { onChange, onRunQuery, ...view };
}

/** Picks the option matching text in a Combobox or MultiCombobox, by keyboard. */
function choose(input: HTMLElement, text: string) {
  fireEvent.change(input, { target: { value: text } });
  fireEvent.keyDown(input, { key: 'ArrowDown' });
  fireEvent.keyDown(input, { key: 'Enter' });
}

describe('QueryEditor', () => {
  it('defaults to the calls table with its visible limit', () => {
    setup();
    expect(screen.getByRole('radio', { name: 'Calls' })).toBeChecked();
    expect(screen.getByRole('radio', { name: 'Table' })).toBeChecked();
    expect(screen.getByLabelText('Limit')).toHaveAttribute('placeholder', '1000');
    expect(screen.getByLabelText('Server IP')).toBeInTheDocument();
    expect(screen.getByLabelText('Path regex')).toBeInTheDocument();
  });

  it('switches the query type and runs the query', () => {
    const { onChange, onRunQuery } = setup({ serverIp: '10.0.0.2' });
    fireEvent.click(screen.getByRole('radio', { name: 'Stats' }));
    expect(onChange).toHaveBeenCalledWith({ refId: 'A', serverIp: '10.0.0.2', queryType: 'stats' });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it('edits text filters on change and runs on blur', () => {
    const { onChange, onRunQuery } = setup();
    const input = screen.getByLabelText('Path prefix');
    fireEvent.change(input, { target: { value: '/api/' } });
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', pathPrefix: '/api/' });
    expect(onRunQuery).not.toHaveBeenCalled();
    fireEvent.blur(input);
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it('stores numbers as numbers and clears them to undefined', () => {
    const { onChange } = setup({ serverPort: 80 });
    const port = screen.getByLabelText('Server port');
    fireEvent.change(port, { target: { value: '8080' } });
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', serverPort: 8080 });
    fireEvent.change(port, { target: { value: '' } });
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', serverPort: undefined });
  });

  it('switches calls to the logs format', () => {
    const { onChange, onRunQuery } = setup({ queryType: 'calls' });
    fireEvent.click(screen.getByRole('radio', { name: 'Logs' }));
    expect(onChange).toHaveBeenCalledWith({ refId: 'A', queryType: 'calls', format: 'logs' });
    expect(onRunQuery).toHaveBeenCalled();
  });

  it('shows the stats fields with their defaults', () => {
    setup({ queryType: 'stats' });
    expect(screen.getByText('rate')).toBeInTheDocument();
    expect(screen.getByLabelText('Top N')).toHaveAttribute('placeholder', '10');
    expect(screen.getByText('Group by')).toBeInTheDocument();
  });

  it('shows the service map edge cap', () => {
    setup({ queryType: 'serviceMap' });
    expect(screen.getByLabelText('Max edges')).toHaveAttribute('placeholder', '200');
  });

  it('asks for a call id for call trees', () => {
    const { onChange } = setup({ queryType: 'callTree' });
    expect(screen.queryByLabelText('Server IP')).not.toBeInTheDocument();
    fireEvent.change(screen.getByLabelText('Call id'), { target: { value: '42' } });
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'callTree', callId: '42' });
    expect(screen.getByLabelText('Max depth')).toHaveAttribute('placeholder', '5');
    fireEvent.change(screen.getByLabelText('or trace id'), { target: { value: '0af7651916cd43dd8448eb211c80319c' } });
    expect(onChange).toHaveBeenLastCalledWith({
      refId: 'A',
      queryType: 'callTree',
      traceId: '0af7651916cd43dd8448eb211c80319c',
    });
  });

  it('asks for a call id for concurrent calls', () => {
    setup({ queryType: 'concurrent', callId: '7' });
    expect(screen.getByLabelText('Call id')).toHaveValue('7');
  });

  it('switches the agents view', () => {
    const { onChange } = setup({ queryType: 'agents' });
    fireEvent.click(screen.getByRole('radio', { name: 'Heartbeats' }));
    expect(onChange).toHaveBeenCalledWith({ refId: 'A', queryType: 'agents', agentView: 'heartbeats' });
  });

  it('shows the executed SQL on demand', () => {
    setup({}, 'SELECT id FROM http_calls LIMIT $3');
    expect(screen.queryByTestId('executed-sql')).not.toBeInTheDocument();
    fireEvent.click(screen.getByRole('button', { name: 'Show SQL' }));
    expect(screen.getByTestId('executed-sql')).toHaveTextContent('SELECT id FROM http_calls LIMIT $3');
  });

  it('changes the sort with its combobox', () => {
    const { onChange, onRunQuery } = setup({ queryType: 'calls' });
    const sort = screen.getByLabelText('Sort');
    expect(sort).toHaveValue('time_desc');
    choose(sort, 'duration_d');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', sort: 'duration_desc' });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it('picks several status classes', () => {
    const { onChange, onRunQuery } = setup({ queryType: 'calls', statusClass: '4xx' });
    choose(screen.getByLabelText('Status class'), '5xx');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', statusClass: ['4xx', '5xx'] });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it('adds metrics and group-by dimensions', () => {
    const { onChange } = setup({ queryType: 'stats' });
    choose(screen.getByLabelText('Metrics'), 'p95');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'stats', metrics: ['rate', 'p95'] });
    choose(screen.getByLabelText('Group by'), 'meth');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'stats', groupBy: ['method'] });
  });

  it('loads server options from the backend for the time range', async () => {
    const { onChange } = setup({ queryType: 'calls' });
    const server = screen.getByLabelText('Server');
    await act(async () => {
      fireEvent.focus(server);
      fireEvent.change(server, { target: { value: '10.0.0.3' } });
    });
    await waitFor(() => expect(getValues).toHaveBeenCalledWith('servers', 1000, 2000));
    // The list is virtualized (no layout in jsdom): pick by keyboard once loaded.
    await act(async () => {});
    fireEvent.keyDown(server, { key: 'ArrowDown' });
    fireEvent.keyDown(server, { key: 'ArrowDown' });
    fireEvent.keyDown(server, { key: 'Enter' });
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', server: ['10.0.0.3:9090'] });
  });

  it('stores statuses as numbers and keeps variables', () => {
    const { onChange } = setup({ queryType: 'calls', status: [404] });
    choose(screen.getByLabelText('Status'), '$status');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', status: [404, '$status'] });
  });

  it('shows the identification, origin, template, token and credentials filters', () => {
    for (const queryType of ['calls', 'stats', 'serviceMap'] as const) {
      const view = setup({ queryType });
      for (const label of [
        'Template',
        'Template prefix',
        'Template regex',
        'Identification',
        'Origin IP',
        'Token problem',
      ]) {
        expect(screen.getByLabelText(label)).toBeInTheDocument();
      }
      expect(screen.getByRole('radio', { name: 'Any' })).toBeChecked();
      view.unmount();
    }
    setup({ queryType: 'callTree' });
    expect(screen.queryByLabelText('Template')).not.toBeInTheDocument();
  });

  it('loads template options from the backend for the time range', async () => {
    const { onChange, onRunQuery } = setup({ queryType: 'calls' });
    const template = screen.getByLabelText('Template');
    await act(async () => {
      fireEvent.focus(template);
      fireEvent.change(template, { target: { value: '{id}' } });
    });
    await waitFor(() => expect(getValues).toHaveBeenCalledWith('templates', 1000, 2000));
    await act(async () => {});
    // The typed text comes first (custom values are allowed), then the match.
    fireEvent.keyDown(template, { key: 'ArrowDown' });
    fireEvent.keyDown(template, { key: 'ArrowDown' });
    fireEvent.keyDown(template, { key: 'Enter' });
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', template: ['/api/orders/{id}'] });
    expect(onRunQuery).toHaveBeenCalled();
  });

  it('accepts typed identifications and variables', () => {
    const { onChange } = setup({ queryType: 'calls', identification: 'alice' });
    choose(screen.getByLabelText('Identification'), '$user');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', identification: ['alice', '$user'] });
  });

  it('edits the origin and template text filters', () => {
    const { onChange, onRunQuery } = setup({ queryType: 'calls' });
    fireEvent.change(screen.getByLabelText('Origin IP'), { target: { value: '203.0.113.0/24' } });
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', origin: '203.0.113.0/24' });
    fireEvent.change(screen.getByLabelText('Template prefix'), { target: { value: '/api/' } });
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', templatePrefix: '/api/' });
    const regex = screen.getByLabelText('Template regex');
    fireEvent.change(regex, { target: { value: '[{]id[}]$' } });
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', templateRegex: '[{]id[}]$' });
    fireEvent.blur(regex);
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it('shows origin lists as text', () => {
    setup({ queryType: 'calls', origin: ['10.0.0.1', '10.1.0.0/16'] });
    expect(screen.getByLabelText('Origin IP')).toHaveValue('10.0.0.1, 10.1.0.0/16');
  });

  it('picks token problems', () => {
    const { onChange, onRunQuery } = setup({ queryType: 'calls', tokenProblem: ['expired'] });
    choose(screen.getByLabelText('Token problem'), 'not_yet');
    expect(onChange).toHaveBeenLastCalledWith({
      refId: 'A',
      queryType: 'calls',
      tokenProblem: ['expired', 'not_yet_valid'],
    });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it('filters on multiple credentials', () => {
    const { onChange } = setup({ queryType: 'calls' });
    fireEvent.click(screen.getByRole('radio', { name: 'Multiple' }));
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', multipleCredentials: true });
    fireEvent.click(screen.getByRole('radio', { name: 'Single' }));
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', multipleCredentials: false });
  });

  it('clears the multiple credentials filter with Any', () => {
    const { onChange } = setup({ queryType: 'calls', multipleCredentials: false });
    expect(screen.getByRole('radio', { name: 'Single' })).toBeChecked();
    fireEvent.click(screen.getByRole('radio', { name: 'Any' }));
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', multipleCredentials: undefined });
  });

  it('groups stats by template, identification and origin', () => {
    const { onChange } = setup({ queryType: 'stats', groupBy: ['server'] });
    choose(screen.getByLabelText('Group by'), 'templ');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'stats', groupBy: ['server', 'template'] });
    choose(screen.getByLabelText('Group by'), 'identif');
    expect(onChange).toHaveBeenLastCalledWith({
      refId: 'A',
      queryType: 'stats',
      groupBy: ['server', 'identification'],
    });
    choose(screen.getByLabelText('Group by'), 'origin');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'stats', groupBy: ['server', 'origin'] });
  });

  it('turns the live tail on for calls', () => {
    const { onChange, onRunQuery } = setup({ queryType: 'calls' });
    fireEvent.click(screen.getByLabelText('Live'));
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'calls', live: true });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it.each(['stats', 'serviceMap'] as const)('asks %s for exact percentiles and back to rollups', (queryType) => {
    const { onChange } = setup({ queryType });
    fireEvent.click(screen.getByLabelText('Exact'));
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType, exact: true });
    cleanup();
    const second = setup({ queryType, exact: true });
    fireEvent.click(screen.getByLabelText('Exact'));
    expect(second.onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType, exact: undefined });
  });

  it('offers no exact switch for calls', () => {
    setup({ queryType: 'calls' });
    expect(screen.queryByLabelText('Exact')).toBeNull();
  });
});
