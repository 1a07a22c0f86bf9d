package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // CREATE and DROP DATABASE of the scratch database
)

// ScratchMySQL creates a scratch database on the MySQL or MariaDB server a DSN names
// ("mysql://root:@tcp(127.0.0.1:3306)/"; a database name in it is replaced, its parameters
// kept) and returns the DSN of the scratch database and a function that drops it.
func ScratchMySQL(ctx context.Context, dsn string) (string, func(), error) {
	if !strings.HasPrefix(dsn, "mysql://") {
		return "", nil, fmt.Errorf("database %q: want a mysql://user:pass@tcp(host:port)/ DSN", redact(dsn))
	}
	d := strings.TrimPrefix(dsn, "mysql://")
	params := ""
	if i := strings.IndexByte(d, '?'); i >= 0 {
		d, params = d[:i], d[i:]
	}
	slash := strings.LastIndexByte(d, '/')
	if slash < 0 {
		return "", nil, fmt.Errorf("database %q: no '/' after the server address", redact(dsn))
	}
	server := d[:slash+1]
	admin, err := sql.Open("mysql", server+params)
	if err != nil {
		return "", nil, fmt.Errorf("MySQL server %s: %w", redact(dsn), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := admin.PingContext(pctx); err != nil {
		_ = admin.Close()
		return "", nil, fmt.Errorf("MySQL server %s: %w", redact(dsn), err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "sysvm_bench_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(pctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4"); err != nil {
		_ = admin.Close()
		return "", nil, fmt.Errorf("create scratch database %s: %w", name, err)
	}
	drop := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(dctx, "DROP DATABASE IF EXISTS "+name)
		_ = admin.Close()
	}
	return "mysql://" + server + name + params, drop, nil
}

// redact hides a password in a DSN.
func redact(dsn string) string {
	at := strings.LastIndexByte(dsn, '@')
	if at < 0 {
		return dsn
	}
	start := strings.Index(dsn, "://")
	if start < 0 {
		start = 0
	} else {
		start += 3
	}
	if c := strings.IndexByte(dsn[start:at], ':'); c >= 0 {
		return dsn[:start+c+1] + "***" + dsn[at:]
	}
	return dsn
}
