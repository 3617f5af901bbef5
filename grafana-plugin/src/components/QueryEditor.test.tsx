import React from 'react';
import { fireEvent, render, screen } from '@testing-library/react';

import { QueryEditor } from './QueryEditor';
import { DataSource } from '../datasource';
import { OrbweaverQuery } from '../types';

function setup(query: Partial<OrbweaverQuery> = {}, executedSQL?: string) {
  const onChange = jest.fn();
  const onRunQuery = jest.fn();
  const data = executedSQL
    ? ({ series: [{ fields: [], length: 0, meta: { executedQueryString: executedSQL } }] } as any)
    : undefined;
  const view = render(
    <QueryEditor
      datasource={{} as DataSource}
      query={{ refId: 'A', ...query }}
      onChange={onChange}
      onRunQuery={onRunQuery}
      data={data}
    />
  );
  return { onChange, onRunQuery, ...view };
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
});
