import React from 'react';
import { fireEvent, render, screen } from '@testing-library/react';

import { ConfigEditor } from './ConfigEditor';

function options(overrides: Record<string, unknown> = {}) {
  return {
    id: 1,
    uid: 'orb',
    orgId: 1,
    name: 'Orbweaver',
    type: 'orbweaver-calls-datasource',
    typeName: 'Orbweaver',
    typeLogoUrl: '',
    access: 'proxy',
    url: 'db:5432',
    user: 'grafana_ro',
    database: '',
    basicAuth: false,
    basicAuthUser: '',
    isDefault: false,
    readOnly: false,
    withCredentials: false,
    jsonData: { database: 'orbweaver', sslmode: 'disable' },
    secureJsonFields: {},
    secureJsonData: {},
    ...overrides,
  } as any;
}

describe('ConfigEditor', () => {
  it('shows the settings', () => {
    render(<ConfigEditor options={options()} onOptionsChange={jest.fn()} />);
    expect(screen.getByDisplayValue('db:5432')).toBeInTheDocument();
    expect(screen.getByDisplayValue('grafana_ro')).toBeInTheDocument();
    expect(screen.getByDisplayValue('orbweaver')).toBeInTheDocument();
    expect(screen.getByText('disable')).toBeInTheDocument();
  });

  it('writes the password to secureJsonData only', () => {
    const onOptionsChange = jest.fn();
    render(<ConfigEditor options={options()} onOptionsChange={onOptionsChange} />);
    fireEvent.change(screen.getByPlaceholderText('Password'), { target: { value: 's3cret' } });
    const next = onOptionsChange.mock.calls[0][0];
    expect(next.secureJsonData).toEqual({ password: 's3cret' });
    expect(next.jsonData).toEqual({ database: 'orbweaver', sslmode: 'disable' });
    expect(JSON.stringify(next.jsonData)).not.toContain('s3cret');
  });

  it('shows a configured password as configured and resets it', () => {
    const onOptionsChange = jest.fn();
    render(
      <ConfigEditor options={options({ secureJsonFields: { password: true } })} onOptionsChange={onOptionsChange} />
    );
    expect(screen.getByDisplayValue('configured')).toBeDisabled();
    fireEvent.click(screen.getByRole('button', { name: 'Reset' }));
    const next = onOptionsChange.mock.calls[0][0];
    expect(next.secureJsonFields).toEqual({ password: false });
    expect(next.secureJsonData).toEqual({ password: '' });
  });

  it('writes host and user at the top level and database in jsonData', () => {
    const onOptionsChange = jest.fn();
    render(<ConfigEditor options={options()} onOptionsChange={onOptionsChange} />);
    fireEvent.change(screen.getByDisplayValue('db:5432'), { target: { value: 'pg:6432' } });
    expect(onOptionsChange.mock.calls[0][0].url).toBe('pg:6432');
    fireEvent.change(screen.getByDisplayValue('grafana_ro'), { target: { value: 'ro' } });
    expect(onOptionsChange.mock.calls[1][0].user).toBe('ro');
    fireEvent.change(screen.getByDisplayValue('orbweaver'), { target: { value: 'calls' } });
    expect(onOptionsChange.mock.calls[2][0].jsonData).toEqual({ database: 'calls', sslmode: 'disable' });
  });
});
