package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrBinariesNotFound is returned (wrapped, with installation advice) by
// Start when the PostgreSQL server binaries cannot be found.
var ErrBinariesNotFound = errors.New("postgresql server binaries not found")

// BinDirEnv names the environment variable that, when set, is the only
// directory searched for initdb, pg_ctl and postgres.
const BinDirEnv = "ORBWEAVER_PG_BINDIR"

// serverBinaries must all be present in the binary directory.
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

const installAdvice = "install the PostgreSQL server: `apt-get install -y postgresql` on Debian/Ubuntu, " +
	"`dnf install -y postgresql-server` on Fedora/RHEL, `brew install postgresql` on macOS; " +
	"or point " + BinDirEnv + " at the directory holding initdb, pg_ctl and postgres"

// findBinDir locates the directory holding initdb, pg_ctl and postgres:
// $ORBWEAVER_PG_BINDIR (exclusively, when set), then `pg_config --bindir`,
// then the highest /usr/lib/postgresql/*/bin, then $PATH.
func findBinDir(ctx context.Context) (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if missing := missingBinaries(dir); len(missing) > 0 {
			return "", fmt.Errorf("%w: %s=%s lacks %s; %s",
				ErrBinariesNotFound, BinDirEnv, dir, strings.Join(missing, ", "), installAdvice)
		}
		return dir, nil
	}
	var tried []string
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
		if err == nil {
			dir := strings.TrimSpace(string(out))
			if len(missingBinaries(dir)) == 0 {
				return dir, nil
			}
			tried = append(tried, dir+" (pg_config --bindir)")
		}
	}
	if dir := highestDebianBinDir(); dir != "" {
		return dir, nil
	}
	tried = append(tried, "/usr/lib/postgresql/*/bin")
	if p, err := exec.LookPath("initdb"); err == nil {
		if resolved, err := filepath.EvalSymlinks(p); err == nil {
			p = resolved
		}
		dir := filepath.Dir(p)
		if len(missingBinaries(dir)) == 0 {
			return dir, nil
		}
	}
	tried = append(tried, "$PATH")
	return "", fmt.Errorf("%w (looked in %s); %s", ErrBinariesNotFound, strings.Join(tried, ", "), installAdvice)
}

// highestDebianBinDir returns the /usr/lib/postgresql/<major>/bin with the
// highest major version that holds all server binaries, or "".
func highestDebianBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type cand struct {
		dir     string
		version float64
	}
	var cands []cand
	for _, d := range dirs {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		if err != nil || len(missingBinaries(d)) > 0 {
			continue
		}
		cands = append(cands, cand{d, v})
	}
	if len(cands) == 0 {
		return ""
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].version > cands[j].version })
	return cands[0].dir
}

// missingBinaries lists the server binaries absent from dir.
func missingBinaries(dir string) []string {
	var missing []string
	for _, name := range serverBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	return missing
}
