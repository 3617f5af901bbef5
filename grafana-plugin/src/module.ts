import { DataSourcePlugin } from '@grafana/data';

import { ConfigEditor } from './components/ConfigEditor';
import { QueryEditor } from './components/QueryEditor';
import { DataSource } from './datasource';
import { OrbweaverOptions, OrbweaverQuery } from './types';

export const plugin = new DataSourcePlugin<DataSource, OrbweaverQuery, OrbweaverOptions>(DataSource)
  .setConfigEditor(ConfigEditor)
  .setQueryEditor(QueryEditor);
