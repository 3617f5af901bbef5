package models

import (
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		in      backend.DataSourceInstanceSettings
		want    Settings
		wantErr string
	}{
		{
			name: "postgres datasource conventions",
			in: backend.DataSourceInstanceSettings{
				URL: "db.internal:6432", User: "grafana_ro",
				JSONData:                []byte(`{"database":"orbweaver","sslmode":"disable","queryTimeoutSeconds":5}`),
				DecryptedSecureJSONData: map[string]string{"password": "p@ss word"},
			},
			want: Settings{Host: "db.internal", Port: "6432", User: "grafana_ro", Password: "p@ss word", Database: "orbweaver",
				SSLMode: "disable", QueryTimeout: 5 * time.Second, MaxConns: DefaultMaxConns},
		},
		{
			name: "defaults and top-level database",
			in:   backend.DataSourceInstanceSettings{URL: "db", User: "u", Database: "d"},
			want: Settings{Host: "db", Port: "5432", User: "u", Database: "d", SSLMode: "require", QueryTimeout: DefaultQueryTimeout, MaxConns: DefaultMaxConns},
		},
		{name: "no url", in: backend.DataSourceInstanceSettings{User: "u", Database: "d"}, wantErr: "host (url) is empty"},
		{name: "no user", in: backend.DataSourceInstanceSettings{URL: "h:1", Database: "d"}, wantErr: "user is empty"},
		{name: "no database", in: backend.DataSourceInstanceSettings{URL: "h:1", User: "u"}, wantErr: "database is empty"},
		{name: "bad port", in: backend.DataSourceInstanceSettings{URL: "h:99999", User: "u", Database: "d"}, wantErr: "not host:port"},
		{name: "bad sslmode", in: backend.DataSourceInstanceSettings{URL: "h", User: "u", Database: "d", JSONData: []byte(`{"sslmode":"yes"}`)}, wantErr: "sslmode"},
		{name: "bad json", in: backend.DataSourceInstanceSettings{URL: "h", JSONData: []byte(`{`)}, wantErr: "read jsonData"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestConnString(t *testing.T) {
	s := Settings{Host: "::1", Port: "5432", User: "ro", Password: "a/b@c?d", Database: "orb", SSLMode: "disable", QueryTimeout: 30 * time.Second, MaxConns: 4}
	want := "postgres://ro:a%2Fb%40c%3Fd@[::1]:5432/orb?application_name=orbweaver-grafana&default_transaction_read_only=on&jit=off&pool_max_conns=4&sslmode=disable&statement_timeout=30000"
	if got := s.ConnString(); got != want {
		t.Fatalf("ConnString = %s\nwant %s", got, want)
	}
}
