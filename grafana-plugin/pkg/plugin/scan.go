package plugin

import (
	"fmt"
	"slices"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// scanColumn scans one result column into a frame field.
type scanColumn struct {
	field *data.Field
	dest  any    // given to Scan
	reset func() // clears dest before each row, so no row reuses another's value
	add   func() // appends dest to field
}

// nullableColumn scans into a field of []*T.
func nullableColumn[T any](name string) *scanColumn {
	var v *T
	f := data.NewField(name, nil, []*T{})
	return &scanColumn{field: f, dest: &v, reset: func() { v = nil }, add: func() { f.Append(v) }}
}

// scanFrame reads all rows into a frame named name, with one nullable field
// per column, except for the columns in notNull (timestamps only), which
// must not be NULL. Integers become int64, numbers float64, timestamps
// time.Time and text string; the SQL casts anything else. The integer[]
// column named hist, when not "", is returned apart, one slice per row,
// and has no field.
func scanFrame(rows pgx.Rows, name, hist string, notNull ...string) (*data.Frame, [][]int32, error) {
	defer rows.Close()
	var cols []*scanColumn
	var hists [][]int32
	histCol := -1
	for i, fd := range rows.FieldDescriptions() {
		if hist != "" && fd.Name == hist {
			var v []int32
			histCol = i
			cols = append(cols, &scanColumn{dest: &v, reset: func() { v = nil }, add: func() { hists = append(hists, v) }})
			continue
		}
		var c *scanColumn
		switch fd.DataTypeOID {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
			c = nullableColumn[int64](fd.Name)
		case pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID:
			c = nullableColumn[float64](fd.Name)
		case pgtype.BoolOID:
			c = nullableColumn[bool](fd.Name)
		case pgtype.TextOID, pgtype.VarcharOID, pgtype.NameOID:
			c = nullableColumn[string](fd.Name)
		case pgtype.TimestamptzOID:
			if slices.Contains(notNull, fd.Name) {
				var v time.Time
				f := data.NewField(fd.Name, nil, []time.Time{})
				c = &scanColumn{field: f, dest: &v, reset: func() {}, add: func() { f.Append(v.UTC()) }}
			} else {
				n := nullableColumn[time.Time](fd.Name)
				dest := n.dest.(**time.Time)
				f := n.field
				n.add = func() {
					if *dest != nil {
						u := (*dest).UTC()
						f.Append(&u)
						return
					}
					f.Append((*time.Time)(nil))
				}
				c = n
			}
		default:
			return nil, nil, fmt.Errorf("column %s has unsupported type oid %d", fd.Name, fd.DataTypeOID)
		}
		cols = append(cols, c)
	}
	dests := make([]any, len(cols))
	for i, c := range cols {
		dests[i] = c.dest
	}
	for rows.Next() {
		for _, c := range cols {
			c.reset()
		}
		if err := rows.Scan(dests...); err != nil {
			return nil, nil, fmt.Errorf("scan: %w", err)
		}
		for _, c := range cols {
			c.add()
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	if hist != "" && histCol < 0 {
		return nil, nil, fmt.Errorf("no column %s", hist)
	}
	var fields []*data.Field
	for i, c := range cols {
		if i != histCol {
			fields = append(fields, c.field)
		}
	}
	return data.NewFrame(name, fields...), hists, nil
}
