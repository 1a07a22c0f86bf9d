package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"
)

// Paging defaults and limits.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// Page is a parsed page request.
type Page struct {
	Page     int
	PageSize int
}

// Offset is the number of rows before the page.
func (p Page) Offset() int { return (p.Page - 1) * p.PageSize }

// ListResponse is the answer of every list endpoint.
type ListResponse[T any] struct {
	// Count is the number of items matching the filters, over all pages.
	Count    int64 `json:"count"`
	Page     int   `json:"page"`
	PageSize int   `json:"pagesize"`
	Items    []T   `json:"items"`
}

// ParsePage reads page (from 1) and pagesize (1..500, default 50).
func ParsePage(c echo.Context) (Page, error) {
	p := Page{Page: 1, PageSize: DefaultPageSize}
	if v := c.QueryParam("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, BadRequest("page", "page must be a whole number from 1, got %q", v)
		}
		p.Page = n
	}
	if v := c.QueryParam("pagesize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageSize {
			return p, BadRequest("pagesize", "pagesize must be a whole number from 1 to %d, got %q", MaxPageSize, v)
		}
		p.PageSize = n
	}
	if int64(p.Page-1)*int64(p.PageSize) > 1<<40 {
		return p, BadRequest("page", "page %d is beyond any list", p.Page)
	}
	return p, nil
}

// filterKind is how a filter's value applies to the query.
type filterKind int

const (
	// exact: column = value.
	exact filterKind = iota
	// enum: the value is one of Enum, matched without regard to case; column = canonical value.
	enum
	// fold: column equals value without regard to case.
	fold
	// like: the value is a substring of the column (case-insensitive on both databases).
	like
	// boolean: true/false on a boolean column.
	boolean
	// notNull: true means the column is set, false that it is null.
	notNull
	// since / until: the column (a timestamp) is at or after / at or before the value.
	since
	until
	// custom: the handler reads the parameter itself.
	custom
)

// filter is one query parameter of a list endpoint.
type filter struct {
	name   string
	column string
	kind   filterKind
	enum   []string
	desc   string
	// ptype overrides the documented type of a custom filter (boolean).
	ptype string
}

// param documents the filter.
func (f filter) param() Param {
	p := Param{Name: f.name, Description: f.desc, Type: "string", Enum: f.enum}
	switch f.kind {
	case boolean, notNull:
		p.Type = "boolean"
	case since, until:
		// RFC 3339 or a date: wider than format date-time, so documented in words.
		if p.Description == "" {
			p.Description = "RFC 3339 time or YYYY-MM-DD"
		}
	}
	if f.ptype != "" {
		p.Type = f.ptype
	}
	return p
}

func params(fs []filter) []Param {
	out := make([]Param, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.param())
	}
	return out
}

// likePattern escapes % and _ (with !) and wraps the value for a substring match.
func likePattern(v string) string {
	r := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")
	return "%" + r.Replace(v) + "%"
}

// parseBool reads a boolean query value.
func parseBool(name, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, BadRequest(name, "%s must be true or false, got %q", name, v)
	}
	return b, nil
}

// parseTime reads an RFC 3339 time or a date.
func parseTime(name, v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	return time.Time{}, BadRequest(name, "%s must be an RFC 3339 time (2021-01-31T12:00:00Z) or a date (2021-01-31), got %q", name, v)
}

// canonical finds v in values without regard to case.
func canonical(name, v string, values []string) (string, error) {
	for _, e := range values {
		if strings.EqualFold(e, v) {
			return e, nil
		}
	}
	return "", BadRequest(name, "%s must be one of %s, got %q", name, strings.Join(values, ", "), v)
}

// applyFilters adds the filters the request sets to q.
func applyFilters(c echo.Context, q *gorm.DB, fs []filter) (*gorm.DB, error) {
	for _, f := range fs {
		v := c.QueryParam(f.name)
		if v == "" || f.kind == custom {
			continue
		}
		switch f.kind {
		case exact:
			q = q.Where(f.column+" = ?", v)
		case enum:
			cv, err := canonical(f.name, v, f.enum)
			if err != nil {
				return nil, err
			}
			q = q.Where(f.column+" = ?", cv)
		case fold:
			q = q.Where("LOWER("+f.column+") = ?", strings.ToLower(v))
		case like:
			q = q.Where("LOWER("+f.column+") LIKE ? ESCAPE '!'", strings.ToLower(likePattern(v)))
		case boolean:
			b, err := parseBool(f.name, v)
			if err != nil {
				return nil, err
			}
			q = q.Where(f.column+" = ?", b)
		case notNull:
			b, err := parseBool(f.name, v)
			if err != nil {
				return nil, err
			}
			if b {
				q = q.Where(f.column + " IS NOT NULL")
			} else {
				q = q.Where(f.column + " IS NULL")
			}
		case since, until:
			t, err := parseTime(f.name, v)
			if err != nil {
				return nil, err
			}
			op := " >= ?"
			if f.kind == until {
				op = " <= ?"
				if len(v) == len("2006-01-02") {
					t = t.Add(24*time.Hour - time.Microsecond) // the whole day
				}
			}
			q = q.Where(f.column+op, t)
		default:
			return nil, fmt.Errorf("filter %s: unknown kind %d", f.name, f.kind)
		}
	}
	return q, nil
}

// listRows runs a filtered, ordered, paged query of T.
func listRows[T any](c echo.Context, q *gorm.DB, fs []filter, order string) (ListResponse[T], error) {
	p, err := ParsePage(c)
	if err != nil {
		return ListResponse[T]{}, err
	}
	q, err = applyFilters(c, q.Model(new(T)), fs)
	if err != nil {
		return ListResponse[T]{}, err
	}
	out := ListResponse[T]{Page: p.Page, PageSize: p.PageSize, Items: []T{}}
	if err := q.Session(&gorm.Session{}).Count(&out.Count).Error; err != nil {
		return out, Internal(err, "count rows")
	}
	if int64(p.Offset()) >= out.Count {
		return out, nil
	}
	if err := q.Order(order).Offset(p.Offset()).Limit(p.PageSize).Find(&out.Items).Error; err != nil {
		return out, Internal(err, "list rows")
	}
	return out, nil
}

// getRow loads one row by ID, answering 404 with what when it does not exist.
func getRow[T any](c echo.Context, db *gorm.DB, id, what string) (T, error) {
	var row T
	err := db.WithContext(c.Request().Context()).Where("id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, NotFound("no %s with id %s", what, id)
	}
	if err != nil {
		return row, Internal(err, "read %s %s", what, id)
	}
	return row, nil
}

// ok answers 200 with v as JSON.
func ok(c echo.Context, v any) error { return c.JSON(http.StatusOK, v) }
