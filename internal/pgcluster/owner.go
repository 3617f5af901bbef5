package pgcluster

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// systemUser is the account that runs the server when Orbweaver runs as
// root: initdb and postgres refuse to run as root.
const systemUser = "postgres"

// owner is the account the server processes run as and that owns the data
// directory. A nil *owner means "the current user".
type owner struct {
	name   string
	uid    int
	gid    int
	groups []int
}

// lookupOwner returns nil when the process is not root, else the postgres
// system user.
func lookupOwner() (*owner, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(systemUser)
	if err != nil {
		return nil, fmt.Errorf("running as root: PostgreSQL refuses to run as root and the %q system user "+
			"to run it as was not found (%v); install the `postgresql` package, which creates it, or run as a non-root user",
			systemUser, err)
	}
	o := &owner{name: u.Username}
	if o.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("user %s: uid %q: %w", u.Username, u.Uid, err)
	}
	if o.gid, err = strconv.Atoi(u.Gid); err != nil {
		return nil, fmt.Errorf("user %s: gid %q: %w", u.Username, u.Gid, err)
	}
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	for _, g := range gids {
		if n, err := strconv.Atoi(g); err == nil {
			o.groups = append(o.groups, n)
		}
	}
	return o, nil
}

// credential is the SysProcAttr credential for child processes, nil to run
// them as the current user.
func (o *owner) credential() *syscall.Credential {
	if o == nil {
		return nil
	}
	groups := make([]uint32, len(o.groups))
	for i, g := range o.groups {
		groups[i] = uint32(g)
	}
	return &syscall.Credential{Uid: uint32(o.uid), Gid: uint32(o.gid), Groups: groups}
}

// chown gives path to the owner; a no-op for the current user.
func (o *owner) chown(path string) error {
	if o == nil {
		return nil
	}
	if err := os.Lchown(path, o.uid, o.gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, o.name, err)
	}
	return nil
}

// checkTraversable verifies that the owner may search (x permission) dir
// and every one of its ancestors, so that the server can reach a data
// directory below dir. ACLs are not considered.
func (o *owner) checkTraversable(dir string) error {
	if o == nil {
		return nil
	}
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		var bit os.FileMode = 0o001
		switch {
		case int(st.Uid) == o.uid:
			bit = 0o100
		case o.inGroup(int(st.Gid)):
			bit = 0o010
		}
		if fi.Mode().Perm()&bit == 0 {
			return fmt.Errorf("directory %s (mode %v) is not traversable by the %q user (uid %d) that runs PostgreSQL "+
				"when Orbweaver runs as root: `chmod o+x %s` or choose a data directory outside it",
				d, fi.Mode().Perm(), o.name, o.uid, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (o *owner) inGroup(gid int) bool {
	if gid == o.gid {
		return true
	}
	for _, g := range o.groups {
		if g == gid {
			return true
		}
	}
	return false
}
