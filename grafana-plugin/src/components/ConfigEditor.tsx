import React, { ChangeEvent } from 'react';
import { DataSourcePluginOptionsEditorProps, SelectableValue } from '@grafana/data';
import { InlineField, Input, SecretInput, Select } from '@grafana/ui';

import { OrbweaverOptions, OrbweaverSecureJsonData } from '../types';

type Props = DataSourcePluginOptionsEditorProps<OrbweaverOptions, OrbweaverSecureJsonData>;

const SSL_MODES: Array<SelectableValue<string>> = ['disable', 'require', 'verify-ca', 'verify-full'].map((m) => ({
  label: m,
  value: m,
}));

const LABEL_WIDTH = 20;

/**
 * Connection settings, named like Grafana's PostgreSQL datasource: url
 * (host:port) and user at the top level, database and sslmode in jsonData,
 * the password in secureJsonData (write-only).
 */
export function ConfigEditor({ options, onOptionsChange }: Props) {
  const { jsonData, secureJsonFields, secureJsonData } = options;

  const setJSON = (patch: Partial<OrbweaverOptions>) =>
    onOptionsChange({ ...options, jsonData: { ...jsonData, ...patch } });

  return (
    <>
      <InlineField
        label="Host"
        labelWidth={LABEL_WIDTH}
        tooltip="host:port of the PostgreSQL server the Orbweaver controller writes to"
      >
        <Input
          id="config-editor-url"
          width={40}
          placeholder="localhost:5432"
          value={options.url ?? ''}
          onChange={(e: ChangeEvent<HTMLInputElement>) => onOptionsChange({ ...options, url: e.target.value })}
        />
      </InlineField>
      <InlineField label="Database" labelWidth={LABEL_WIDTH}>
        <Input
          id="config-editor-database"
          width={40}
          placeholder="orbweaver"
          value={jsonData.database ?? ''}
          onChange={(e: ChangeEvent<HTMLInputElement>) => setJSON({ database: e.target.value })}
        />
      </InlineField>
      <InlineField
        label="User"
        labelWidth={LABEL_WIDTH}
        tooltip="Use the read-only role the controller's migrations create"
      >
        <Input
          id="config-editor-user"
          width={40}
          placeholder="orbweaver_grafana"
          value={options.user ?? ''}
          onChange={(e: ChangeEvent<HTMLInputElement>) => onOptionsChange({ ...options, user: e.target.value })}
        />
      </InlineField>
      <InlineField label="Password" labelWidth={LABEL_WIDTH}>
        <SecretInput
          id="config-editor-password"
          width={40}
          placeholder="Password"
          isConfigured={!!secureJsonFields?.password}
          value={secureJsonData?.password ?? ''}
          onChange={(e: ChangeEvent<HTMLInputElement>) =>
            onOptionsChange({ ...options, secureJsonData: { ...secureJsonData, password: e.target.value } })
          }
          onReset={() =>
            onOptionsChange({
              ...options,
              secureJsonFields: { ...secureJsonFields, password: false },
              secureJsonData: { ...secureJsonData, password: '' },
            })
          }
        />
      </InlineField>
      <InlineField label="TLS/SSL mode" labelWidth={LABEL_WIDTH}>
        <Select
          inputId="config-editor-sslmode"
          width={40}
          options={SSL_MODES}
          value={jsonData.sslmode ?? 'require'}
          onChange={(v) => setJSON({ sslmode: v.value })}
        />
      </InlineField>
      <InlineField
        label="Query timeout (s)"
        labelWidth={LABEL_WIDTH}
        tooltip="Server-side statement timeout; default 30"
      >
        <Input
          id="config-editor-timeout"
          type="number"
          width={40}
          placeholder="30"
          value={jsonData.queryTimeoutSeconds ?? ''}
          onChange={(e: ChangeEvent<HTMLInputElement>) =>
            setJSON({ queryTimeoutSeconds: e.target.value === '' ? undefined : Number(e.target.value) })
          }
        />
      </InlineField>
    </>
  );
}
