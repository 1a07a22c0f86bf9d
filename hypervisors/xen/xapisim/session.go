package xapisim

import (
	"time"

	"github.com/google/uuid"
)

const classSession = "session"

func newUUID() string { return uuid.NewString() }

// sessionRec is XAPI's session class.
type sessionRec struct {
	UUID         string            `xapi:"uuid"`
	ThisHost     string            `xapi:"this_host"`
	ThisUser     string            `xapi:"this_user"`
	LastActive   time.Time         `xapi:"last_active"`
	Pool         bool              `xapi:"pool"`
	IsLocalSuper bool              `xapi:"is_local_superuser"`
	AuthUserName string            `xapi:"auth_user_name"`
	Originator   string            `xapi:"originator"`
	OtherConfig  map[string]string `xapi:"other_config,rw"`
}

func newSessionClass() *class {
	c := newClass(classSession, sessionRec{})
	c.noGetAll = true
	return c
}

func (s *Server) registerSession() {
	// session.login_with_password(uname, pwd, version, originator): version and originator
	// may be left out, as older SDKs do.
	s.methods["session.login_with_password"] = &method{
		name: "session.login_with_password", params: []param{pString("uname"), pString("pwd"), pString("version"), pString("originator")},
		optional: 2, noSession: true,
		fn: func(c *call) (any, error) {
			user := c.str(0)
			pwd := c.str(1)
			originator := c.str(3)
			if user != s.opts.Username || pwd != s.opts.Password {
				return nil, fail(CodeSessionAuthenticationFailed, user, "Authentication failure")
			}
			pool, _ := all[poolRec](s.db, classPool)
			master := ""
			if len(pool) > 0 {
				p, _ := lookup[poolRec](s.db, classPool, pool[0])
				master = p.Master
			}
			return s.db.add(classSession, &sessionRec{
				UUID: newUUID(), ThisHost: master, ThisUser: NullRef, LastActive: time.Now().UTC(),
				IsLocalSuper: true, AuthUserName: user, Originator: originator,
				OtherConfig: map[string]string{},
			}), nil
		},
	}
	s.methods["session.logout"] = &method{name: "session.logout", fn: func(c *call) (any, error) {
		s.db.remove(classSession, c.sessionRef)
		return "", nil
	}}
}
