package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/sysvm/sysvm/models"
)

const callerKey = "sysvm.apikey"

// roleRank orders roles: admin ⊃ operator ⊃ read-only.
func roleRank(role string) int {
	switch role {
	case models.RoleReadOnly:
		return 1
	case models.RoleOperator:
		return 2
	case models.RoleAdmin:
		return 3
	}
	return 0
}

// Caller is the API key that authenticated the request.
func Caller(c echo.Context) (models.APIKey, bool) {
	k, ok := c.Get(callerKey).(models.APIKey)
	return k, ok
}

// authenticate checks the bearer key and that its role is at least min.
func (s *Server) authenticate(min string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Request().Header.Get(echo.HeaderAuthorization)
			if h == "" {
				return &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized,
					Message: "missing API key: send the header Authorization: Bearer <key>"}
			}
			scheme, key, _ := strings.Cut(h, " ")
			key = strings.TrimSpace(key)
			if !strings.EqualFold(scheme, "Bearer") || key == "" {
				return &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized,
					Message: "malformed Authorization header: want Bearer <key>"}
			}
			k, err := s.store.Authenticate(c.Request().Context(), key)
			if errors.Is(err, models.ErrNotFound) {
				return &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "invalid API key"}
			}
			if err != nil {
				return Unavailable(err, "cannot check the API key: database unavailable")
			}
			c.Set(callerKey, k)
			if roleRank(k.Role) < roleRank(min) {
				return &Error{Status: http.StatusForbidden, Code: CodeForbidden,
					Message: "API key " + k.Name + " has role " + k.Role + "; " + c.Request().Method + " " +
						c.Request().URL.Path + " needs role " + min + " or higher"}
			}
			return next(c)
		}
	}
}
