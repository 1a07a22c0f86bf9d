package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"

	"github.com/sysvm/sysvm/models"
)

func (s *Server) apiKeyRoutes() []Route {
	return []Route{
		{Method: http.MethodPost, Path: "/api-keys", Role: models.RoleAdmin, Handler: s.createAPIKey, Doc: Doc{
			OperationID: "createAPIKey", Summary: "Create an API key", Tag: "API keys",
			Description: "The clear key is in this answer only; the server keeps a hash of it.",
			Body:        "APIKeyCreate", BodyRequired: true,
			Responses: []Response{{Status: 201, Description: "the key, with its clear value shown once", Schema: "APIKeyCreated"},
				{Status: 409, Description: "a key of that name exists", Schema: "Error"}}}},
		{Method: http.MethodGet, Path: "/api-keys", Role: models.RoleAdmin, Handler: s.listAPIKeys, Doc: Doc{
			OperationID: "listAPIKeys", Summary: "List API keys (never their secrets)", Tag: "API keys", Paged: true,
			Query:     []Param{{Name: "role", Type: "string", Enum: []string{models.RoleAdmin, models.RoleOperator, models.RoleReadOnly}, Description: "keys of this role"}},
			Responses: []Response{{Status: 200, Description: "a page of keys", Schema: "APIKeyList"}}}},
		{Method: http.MethodDelete, Path: "/api-keys/{id}", Role: models.RoleAdmin, Handler: s.deleteAPIKey, Doc: Doc{
			OperationID: "deleteAPIKey", Summary: "Delete an API key", Tag: "API keys",
			Responses: []Response{{Status: 204, Description: "deleted"},
				{Status: 409, Description: "the last admin key cannot be deleted", Schema: "Error"}}}},
	}
}

// apiKeyCreate is the body of POST /api-keys.
type apiKeyCreate struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// apiKeyCreated is a new key with its clear value.
type apiKeyCreated struct {
	models.APIKey
	Key string `json:"key"`
}

func (s *Server) createAPIKey(c echo.Context) error {
	ctx := c.Request().Context()
	var body apiKeyCreate
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	body.Name = strings.TrimSpace(body.Name)
	if body.Name == "" {
		return BadRequest("name", "name is required")
	}
	if len(body.Name) > 255 {
		return BadRequest("name", "name is longer than 255 characters")
	}
	if body.Role == "" {
		return BadRequest("role", "role is required: admin, operator or read-only")
	}
	if !models.ValidRole(body.Role) {
		return BadRequest("role", "role must be admin, operator or read-only, got %q", body.Role)
	}
	var n int64
	if err := s.store.DB.WithContext(ctx).Model(&models.APIKey{}).Where("name = ?", body.Name).Count(&n).Error; err != nil {
		return Internal(err, "check API key names")
	}
	if n > 0 {
		return Conflict("an API key named %q exists; names identify who started each operation, so they are unique", body.Name)
	}
	k, clear, err := s.store.CreateAPIKey(ctx, body.Name, body.Role, "")
	if err != nil {
		return Internal(err, "create API key")
	}
	s.recordKeyEvent(c, "APIKEY.CREATE", fmt.Sprintf("API key %s (%s, prefix %s) created", k.Name, k.Role, k.Prefix), k.ID)
	return c.JSON(http.StatusCreated, apiKeyCreated{APIKey: k, Key: clear})
}

func (s *Server) listAPIKeys(c echo.Context) error {
	fs := []filter{{name: "role", column: "role", kind: enum, enum: []string{models.RoleAdmin, models.RoleOperator, models.RoleReadOnly}}}
	out, err := listRows[models.APIKey](c, s.store.DB.WithContext(c.Request().Context()), fs, "name, id")
	if err != nil {
		return err
	}
	return ok(c, out)
}

func (s *Server) deleteAPIKey(c echo.Context) error {
	ctx := c.Request().Context()
	k, err := getRow[models.APIKey](c, s.store.DB, c.Param("id"), "API key")
	if err != nil {
		return err
	}
	err = s.store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if k.Role == models.RoleAdmin {
			var admins int64
			if err := tx.Model(&models.APIKey{}).Where("role = ?", models.RoleAdmin).Count(&admins).Error; err != nil {
				return err
			}
			if admins <= 1 {
				return Conflict("API key %s is the last admin key; create another admin key before deleting it", k.Name)
			}
		}
		return tx.Where("id = ?", k.ID).Delete(&models.APIKey{}).Error
	})
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	if err != nil {
		return Internal(err, "delete API key %s", k.ID)
	}
	s.recordKeyEvent(c, "APIKEY.DELETE", fmt.Sprintf("API key %s (%s, prefix %s) deleted", k.Name, k.Role, k.Prefix), k.ID)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) recordKeyEvent(c echo.Context, typ, desc, keyID string) {
	if k, found := Caller(c); found {
		desc += " by API key " + k.Name
	}
	if err := s.store.AddEvent(c.Request().Context(), models.Event{Type: typ, Level: "INFO", Description: desc,
		ResourceType: "apikey", ResourceID: keyID}); err != nil {
		s.log.Error("record API key event", "error", err)
	}
}
