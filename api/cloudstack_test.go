package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sysvm/sysvm/consoles"
	"github.com/sysvm/sysvm/internal/certtest"
	"github.com/sysvm/sysvm/internal/testenv"
	"github.com/sysvm/sysvm/models"
	"github.com/sysvm/sysvm/models/modelstest"
)

// csEnv is a seeded server on a real listener with a CloudStack key pair for each role.
type csEnv struct {
	*env
	url   string
	pairs map[string]csKeysView // role -> pair
}

func newCSEnv(t *testing.T) *csEnv {
	t.Helper()
	return newCSEnvOn(t, modelstest.SQLite(t))
}

func newCSEnvOn(t *testing.T, store *models.Store) *csEnv {
	t.Helper()
	return newCSEnvOnConfig(t, store, Config{})
}

func newCSEnvOnConfig(t *testing.T, store *models.Store, cfg Config) *csEnv {
	t.Helper()
	e := newEnv(t, store, cfg)
	e.fx = seed(t, store)
	ts := httptest.NewServer(e.srv.Handler())
	t.Cleanup(ts.Close)
	ce := &csEnv{env: e, url: ts.URL + CloudStackPath, pairs: map[string]csKeysView{}}
	for _, role := range []string{models.RoleAdmin, models.RoleOperator, models.RoleReadOnly} {
		k, err := store.Authenticate(context.Background(), e.keys[role])
		modelstest.Must(t, err, "find %s key", role)
		r := e.want(e.do("POST", "/api-keys/"+k.ID+"/cloudstack-keys", models.RoleAdmin, nil), 201, "create cloudstack keys")
		var v csKeysView
		if err := json.Unmarshal(r.Raw, &v); err != nil || v.SecretKey == "" || v.APIKey == "" {
			t.Fatalf("cloudstack keys answer %s: %v", r.Raw, err)
		}
		ce.pairs[role] = v
	}
	return ce
}

// sign signs params by hand as CloudStack documents it, over the canonical string given
// (the test writes it out, so the server's own encoder is not the oracle).
func csSign(secret, canonical string, h func() hash.Hash) string {
	m := hmac.New(h, []byte(secret))
	m.Write([]byte(canonical))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// csResp is a command API answer.
type csResp struct {
	status int
	ctype  string
	raw    []byte
	body   map[string]any // the members of <command>response
	name   string         // the envelope's one key
}

func (ce *csEnv) send(method string, params url.Values) csResp {
	ce.t.Helper()
	var req *http.Request
	var err error
	if method == http.MethodGet {
		req, err = http.NewRequest(method, ce.url+"?"+params.Encode(), nil)
	} else {
		req, err = http.NewRequest(method, ce.url, strings.NewReader(params.Encode()))
		if req != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if err != nil {
		ce.t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		ce.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := csResp{status: res.StatusCode, ctype: res.Header.Get("Content-Type"), raw: raw}
	if strings.HasPrefix(r.ctype, "application/json") {
		var env map[string]map[string]any
		if err := json.Unmarshal(raw, &env); err != nil {
			ce.t.Fatalf("answer is not a CloudStack envelope: %v: %s", err, raw)
		}
		if len(env) != 1 {
			ce.t.Fatalf("envelope with %d members: %s", len(env), raw)
		}
		for k, v := range env {
			r.name, r.body = k, v
		}
	}
	return r
}

// signed adds apiKey, response=json, signatureVersion 3 and expires, and the signature
// computed with the server's canonical form (for the tests that are not about signing).
func (ce *csEnv) signed(role string, params url.Values) url.Values {
	pair := ce.pairs[role]
	params.Set("apiKey", pair.APIKey)
	if params.Get("response") == "" {
		params.Set("response", "json")
	}
	params.Set("signatureVersion", "3")
	params.Set("expires", time.Now().Add(5*time.Minute).UTC().Format("2006-01-02T15:04:05-0700"))
	params.Set("signature", csSign(pair.SecretKey, csStringToSign(params), sha1.New))
	return params
}

func (ce *csEnv) cmd(role, command string, kv ...string) csResp {
	ce.t.Helper()
	q := url.Values{"command": {command}}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return ce.send(http.MethodGet, ce.signed(role, q))
}

func wantCSError(t *testing.T, r csResp, code int, textPart, what string) {
	t.Helper()
	if r.status != code {
		t.Errorf("%s: HTTP %d, want %d: %s", what, r.status, code, r.raw)
		return
	}
	if got, _ := r.body["errorcode"].(float64); int(got) != code {
		t.Errorf("%s: errorcode %v, want %d: %s", what, r.body["errorcode"], code, r.raw)
	}
	if txt, _ := r.body["errortext"].(string); !strings.Contains(txt, textPart) {
		t.Errorf("%s: errortext %q does not say %q", what, txt, textPart)
	}
}

func TestCloudStackSignatures(t *testing.T) {
	ce := newCSEnv(t)
	pair := ce.pairs[models.RoleReadOnly]
	exp := time.Now().Add(10 * time.Minute).UTC().Format("2006-01-02T15:04:05-0700")
	// A value with a space, +, *, a slash and non-ASCII letters, signed over the string written
	// out by hand: spaces %20, + %2b, * kept, UTF-8 bytes escaped, all lowercased.
	keyword := "r 4+*/é"
	canonical := "apikey=" + strings.ToLower(pair.APIKey) + "&command=listrouters&expires=" +
		strings.ToLower(strings.NewReplacer("+", "%2B", ":", "%3A").Replace(exp)) + "&keyword=r%204%2b*%2f%c3%a9&response=json&signatureversion=3"
	params := url.Values{"apiKey": {pair.APIKey}, "command": {"listRouters"}, "keyword": {keyword}, "response": {"json"},
		"signatureVersion": {"3"}, "expires": {exp}}
	if got := csStringToSign(params); got != canonical {
		t.Fatalf("string to sign\n got %s\nwant %s", got, canonical)
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		q := url.Values{}
		for k, v := range params {
			q[k] = v
		}
		q.Set("signature", csSign(pair.SecretKey, canonical, sha1.New))
		r := ce.send(method, q)
		if r.status != 200 || r.name != "listroutersresponse" {
			t.Fatalf("%s with an edge-case value: %d %s", method, r.status, r.raw)
		}
		if len(r.body) != 0 {
			t.Errorf("%s: no router matches %q, want the empty envelope {}: %s", method, keyword, r.raw)
		}
	}
	// HMAC-SHA512 over the same string is accepted too.
	q := url.Values{}
	for k, v := range params {
		q[k] = v
	}
	q.Set("signature", csSign(pair.SecretKey, canonical, sha512.New))
	if r := ce.send(http.MethodGet, q); r.status != 200 {
		t.Errorf("HMAC-SHA512 signature: %d %s", r.status, r.raw)
	}

	refuse := func(what string, q url.Values) {
		t.Helper()
		r := ce.send(http.MethodGet, q)
		wantCSError(t, r, 401, csAuthFailed, what)
		if r.name != "listroutersresponse" {
			t.Errorf("%s: envelope %q, want listroutersresponse", what, r.name)
		}
	}
	// A wrong secret, another key's apikey, a changed parameter, no signature.
	bad := url.Values{}
	for k, v := range params {
		bad[k] = v
	}
	bad.Set("signature", csSign("not-the-secret", canonical, sha1.New))
	refuse("wrong secret", bad)
	other := url.Values{}
	for k, v := range params {
		other[k] = v
	}
	other.Set("apiKey", ce.pairs[models.RoleAdmin].APIKey)
	other.Set("signature", csSign(pair.SecretKey, canonical, sha1.New))
	refuse("another key's apikey", other)
	tampered := url.Values{}
	for k, v := range params {
		tampered[k] = v
	}
	tampered.Set("signature", csSign(pair.SecretKey, canonical, sha1.New))
	tampered.Set("keyword", "r 5")
	refuse("changed parameter", tampered)
	unsigned := url.Values{}
	for k, v := range params {
		unsigned[k] = v
	}
	refuse("no signature", unsigned)
	unknownKey := url.Values{}
	for k, v := range params {
		unknownKey[k] = v
	}
	unknownKey.Set("apiKey", strings.Repeat("ab", 32))
	unknownKey.Set("signature", csSign(pair.SecretKey, canonical, sha1.New))
	refuse("unknown apikey", unknownKey)

	// Expired, and a request replayed after it expired.
	past := time.Now().Add(-time.Second).UTC().Format("2006-01-02T15:04:05-0700")
	expired := url.Values{"apiKey": {pair.APIKey}, "command": {"listRouters"}, "response": {"json"}, "signatureVersion": {"3"}, "expires": {past}}
	expired.Set("signature", csSign(pair.SecretKey, csStringToSign(expired), sha1.New))
	refuse("expired", expired)
	soon := time.Now().Add(2 * time.Second).UTC().Format("2006-01-02T15:04:05-0700")
	replay := url.Values{"apiKey": {pair.APIKey}, "command": {"listRouters"}, "response": {"json"}, "signatureVersion": {"3"}, "expires": {soon}}
	replay.Set("signature", csSign(pair.SecretKey, csStringToSign(replay), sha1.New))
	if r := ce.send(http.MethodGet, replay); r.status != 200 {
		t.Fatalf("request before it expires: %d %s", r.status, r.raw)
	}
	time.Sleep(time.Until(mustParseExpires(t, soon)) + 1100*time.Millisecond)
	refuse("replayed after expiry", replay)
	noExpires := url.Values{"apiKey": {pair.APIKey}, "command": {"listRouters"}, "response": {"json"}, "signatureVersion": {"3"}}
	noExpires.Set("signature", csSign(pair.SecretKey, csStringToSign(noExpires), sha1.New))
	refuse("signatureVersion 3 without expires", noExpires)

	// Replacing the pair stops the old secret at once; deleting the sysvm key stops the pair.
	k, err := ce.store.Authenticate(context.Background(), ce.keys[models.RoleReadOnly])
	modelstest.Must(t, err, "find key")
	old := ce.cmd(models.RoleReadOnly, "listZones")
	if old.status != 200 {
		t.Fatalf("listZones: %d %s", old.status, old.raw)
	}
	ce.want(ce.do("POST", "/api-keys/"+k.ID+"/cloudstack-keys", models.RoleAdmin, nil), 201, "replace keys")
	wantCSError(t, ce.cmd(models.RoleReadOnly, "listZones"), 401, csAuthFailed, "old pair after replacement")
}

func mustParseExpires(t *testing.T, v string) time.Time {
	t.Helper()
	tm, err := parseCSExpires(v)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestCloudStackKeyPairs(t *testing.T) {
	ce := newCSEnv(t)
	k, err := ce.store.Authenticate(context.Background(), ce.keys[models.RoleOperator])
	modelstest.Must(t, err, "find key")
	pair := ce.pairs[models.RoleOperator]
	r := ce.want(ce.do("GET", "/api-keys/"+k.ID+"/cloudstack-keys", models.RoleAdmin, nil), 200, "show keys")
	if r.JSON["apikey"] != pair.APIKey || r.JSON["secretkey"] != nil || bytes.Contains(r.Raw, []byte(pair.SecretKey)) {
		t.Errorf("GET cloudstack-keys shows %s, want the apikey and never the secret", r.Raw)
	}
	ce.wantErr(ce.do("GET", "/api-keys/"+k.ID+"/cloudstack-keys", models.RoleOperator, nil), 403, CodeForbidden, "", "operator showing keys")
	ce.wantErr(ce.do("POST", "/api-keys/no-such-key/cloudstack-keys", models.RoleAdmin, nil), 404, CodeNotFound, "", "keys of no key")
	var rows []models.Secret
	modelstest.Must(t, ce.store.DB.Where("kind = ?", csKeySecretKind).Find(&rows).Error, "read secrets")
	if len(rows) != 3 {
		t.Errorf("%d key pair secrets, want 3", len(rows))
	}
	for _, row := range rows {
		if bytes.Contains(row.Ciphertext, []byte(pair.SecretKey)) {
			t.Errorf("secret %s holds the secret key in clear", row.Name)
		}
	}
	// Deleting the sysvm key refuses its pair at once.
	if r := ce.cmd(models.RoleOperator, "listZones"); r.status != 200 {
		t.Fatalf("listZones with the operator pair: %d %s", r.status, r.raw)
	}
	ce.want(ce.do("DELETE", "/api-keys/"+k.ID, models.RoleAdmin, nil), 204, "delete the operator key")
	wantCSError(t, ce.cmd(models.RoleOperator, "listZones"), 401, csAuthFailed, "pair of a deleted key")
}

func TestCloudStackCommands(t *testing.T) {
	modelstest.ForEach(t, func(t *testing.T, store *models.Store) { testCloudStackCommands(t, newCSEnvOn(t, store)) })
}

func testCloudStackCommands(t *testing.T, ce *csEnv) {
	fx := ce.fx
	_, err := ce.store.Settings.Set(context.Background(), "minreq.sysvmtemplate.version", models.ScopeGlobal, "", "4.15.0")
	modelstest.Must(t, err, "set minreq")

	// listRouters: CloudStack's envelope, names and types; the REST API's facts.
	r := ce.cmd(models.RoleReadOnly, "listRouters", "requiresupgrade", "true")
	if r.status != 200 || r.name != "listroutersresponse" || !strings.HasPrefix(r.ctype, "application/json") {
		t.Fatalf("listRouters: %d %s %s", r.status, r.ctype, r.raw)
	}
	rest := ce.want(ce.do("GET", "/routers?requiresupgrade=true", models.RoleReadOnly, nil), 200, "REST listRouters")
	restItems := items(t, rest)
	csItems, _ := r.body["router"].([]any)
	if int(r.body["count"].(float64)) != count(rest) || len(csItems) != len(restItems) || len(csItems) == 0 {
		t.Fatalf("listRouters count %v / %d items, REST %d / %d: %s", r.body["count"], len(csItems), count(rest), len(restItems), r.raw)
	}
	for i, it := range csItems {
		cr, rr := it.(map[string]any), restItems[i]
		for _, f := range []string{"id", "name", "state", "zoneid", "podid", "hostid", "templateid", "hypervisor", "requiresupgrade",
			"healthchecksfailed", "isredundantrouter", "linklocalip", "guestnetworkid", "domainid"} {
			if (cr[f] != nil || rr[f] != "") && cr[f] != rr[f] {
				t.Errorf("router %v field %s: command API %#v, REST %#v", rr["name"], f, cr[f], rr[f])
			}
		}
		if (rr["version"] != "" || cr["version"] != nil) && cr["version"] != rr["version"] {
			t.Errorf("router %v version %v vs %v", rr["name"], cr["version"], rr["version"])
		}
		created, _ := time.Parse(time.RFC3339Nano, rr["created"].(string))
		if cr["created"] != created.UTC().Format("2006-01-02T15:04:05-0700") || !strings.HasSuffix(cr["created"].(string), "+0000") {
			t.Errorf("router created %v, want CloudStack's format of %v", cr["created"], rr["created"])
		}
		if cr["role"] != "VIRTUAL_ROUTER" {
			t.Errorf("router role %v", cr["role"])
		}
	}
	// One router by id with its health results, names resolved.
	one := ce.cmd(models.RoleReadOnly, "listRouters", "id", fx.r4, "fetchhealthcheckresults", "true")
	routers, _ := one.body["router"].([]any)
	if len(routers) != 1 {
		t.Fatalf("listRouters id: %s", one.raw)
	}
	r4 := routers[0].(map[string]any)
	if r4["zonename"] != "zone-1" || r4["guestnetworkname"] != "net_100%" || r4["account"] != "admin" || r4["healthchecksfailed"] != true {
		t.Errorf("r-4-VM: %s", one.raw)
	}
	if hc, _ := r4["healthcheckresults"].([]any); len(hc) != 2 {
		t.Errorf("r-4-VM healthcheckresults %v, want 2", r4["healthcheckresults"])
	}
	// id with a filter it does not match is an empty list; an unknown id a 431.
	if r := ce.cmd(models.RoleReadOnly, "listRouters", "id", fx.r4, "zoneid", fx.zone2); r.status != 200 || len(r.body) != 0 {
		t.Errorf("listRouters id of zone 1 in zone 2: %d %s", r.status, r.raw)
	}
	wantCSError(t, ce.cmd(models.RoleReadOnly, "listRouters", "id", "no-such-router"), 431, "no router with id", "unknown router id")
	if e := ce.cmd(models.RoleReadOnly, "listRouters", "id", "x").body["cserrorcode"]; e != float64(4350) {
		t.Errorf("cserrorcode %v, want 4350", e)
	}
	// account (a name) with domainid.
	if r := ce.cmd(models.RoleReadOnly, "listRouters", "account", "admin", "domainid", fx.domain); r.body["count"] != float64(3) {
		t.Errorf("listRouters account=admin: %s", r.raw)
	}
	// Paging.
	if r := ce.cmd(models.RoleReadOnly, "listRouters", "page", "2", "pagesize", "3"); r.body["count"] != float64(4) || len(r.body["router"].([]any)) != 1 {
		t.Errorf("page 2 of 3: %s", r.raw)
	}
	// Refusals in CloudStack's words.
	wantCSError(t, ce.cmd(models.RoleReadOnly, "listRouters", "zoneidd", "x"), 431, "Unknown parameter zoneidd", "misspelt filter")
	wantCSError(t, ce.cmd(models.RoleReadOnly, "listRouters", "state", "Sleeping"), 431, "state must be one of", "bad state")
	wantCSError(t, ce.cmd(models.RoleReadOnly, "rebootRouter"), 401, "needs role operator", "read-only key rebooting")
	wantCSError(t, ce.cmd(models.RoleOperator, "rebootRouter"), 431, "due to missing parameter id", "missing id")
	wantCSError(t, ce.cmd(models.RoleOperator, "rebootRouter", "id", fx.r7), 431, "is destroyed", "reboot destroyed router")
	wantCSError(t, ce.cmd(models.RoleOperator, "deployVirtualMachine"), 432, "does not exist", "unknown command")
	wantCSError(t, ce.cmd(models.RoleOperator, "rebootSystemVm", "id", fx.r4), 431, "is a virtual router", "router as a system VM")
	wantCSError(t, ce.cmd(models.RoleOperator, "updateConfiguration", "name", "x", "value", "1"), 401, "needs role admin", "operator updating")

	// listSystemVms.
	s := ce.cmd(models.RoleReadOnly, "listSystemVms", "zoneid", fx.zone1)
	vms, _ := s.body["systemvm"].([]any)
	if len(vms) != 2 || vms[0].(map[string]any)["systemvmtype"] == nil || vms[1].(map[string]any)["activeviewersessions"] != float64(3) {
		t.Errorf("listSystemVms: %s", s.raw)
	}

	// Settings: listConfigurations / updateConfiguration, with the REST validation.
	u := ce.cmd(models.RoleAdmin, "updateConfiguration", "name", "router.template.kvm", "value", "systemvm-kvm-4.16.0", "zoneid", fx.zone1)
	cfg, _ := u.body["configuration"].(map[string]any)
	if u.status != 200 || cfg["value"] != "systemvm-kvm-4.16.0" || cfg["scope"] != "zone" {
		t.Errorf("updateConfiguration: %d %s", u.status, u.raw)
	}
	wantCSError(t, ce.cmd(models.RoleAdmin, "updateConfiguration", "name", "router.health.checks.enabled", "value", "maybe"), 431, "", "bad boolean")
	wantCSError(t, ce.cmd(models.RoleAdmin, "updateConfiguration", "name", "consoleproxy.certificate.check.interval", "value", "30", "zoneid", fx.zone1),
		431, "cannot be set at zone scope", "global-only setting in a zone")
	l := ce.cmd(models.RoleReadOnly, "listConfigurations", "name", "router.template.kvm", "zoneid", fx.zone1)
	cfgs, _ := l.body["configuration"].([]any)
	if len(cfgs) != 1 || cfgs[0].(map[string]any)["value"] != "systemvm-kvm-4.16.0" {
		t.Errorf("listConfigurations in zone 1: %s", l.raw)
	}

	// Inventory lists.
	for _, c := range []struct {
		command, object string
		n               int
		kv              []string
	}{
		{"listZones", "zone", 2, nil}, {"listPods", "pod", 1, []string{"zoneid", fx.zone1}},
		{"listClusters", "cluster", 2, nil}, {"listHosts", "host", 1, []string{"clusterid", fx.cluster1}},
		{"listNetworks", "network", 3, nil}, {"listEvents", "event", 1, []string{"startdate", "2024-03-12", "enddate", "2024-03-12"}},
		{"listAlerts", "alert", 2, nil}, {"listTemplates", "template", 1, []string{"templatefilter", "all", "hypervisor", "KVM"}},
	} {
		r := ce.cmd(models.RoleReadOnly, c.command, c.kv...)
		got, _ := r.body[c.object].([]any)
		if r.status != 200 || len(got) != c.n || r.body["count"] != float64(c.n) {
			t.Errorf("%s %v: %d %s, want %d %s", c.command, c.kv, r.status, r.raw, c.n, c.object)
		}
	}
	if r := ce.cmd(models.RoleReadOnly, "listHosts", "id", fx.host1); r.body["host"].([]any)[0].(map[string]any)["memorytotal"] != float64(65536<<20) {
		t.Errorf("listHosts memorytotal (bytes): %s", r.raw)
	}
	wantCSError(t, ce.cmd(models.RoleReadOnly, "listTemplates"), 431, "missing parameter templatefilter", "listTemplates without templatefilter")

	// XML, CloudStack's default.
	q := url.Values{"command": {"listZones"}, "response": {"xml"}, "name": {"zone-1"}}
	x := ce.send(http.MethodGet, ce.signed(models.RoleReadOnly, q))
	if x.status != 200 || !strings.HasPrefix(x.ctype, "text/xml") || !bytes.Contains(x.raw, []byte("<listzonesresponse cloud-stack-version=")) ||
		!bytes.Contains(x.raw, []byte("<count>1</count>")) || !bytes.Contains(x.raw, []byte("<name>zone-1</name>")) {
		t.Errorf("XML listZones: %d %s %s", x.status, x.ctype, x.raw)
	}

	// Without response, XML too (CloudStack's default), errors included.
	pair := ce.pairs[models.RoleReadOnly]
	dq := url.Values{"command": {"listPods"}, "apiKey": {pair.APIKey}, "zoneid": {fx.zone1}}
	dq.Set("signature", csSign(pair.SecretKey, csStringToSign(dq), sha1.New))
	if x := ce.send(http.MethodGet, dq); x.status != 200 || !strings.HasPrefix(x.ctype, "text/xml") ||
		!bytes.Contains(x.raw, []byte("<name>pod-1</name>")) {
		t.Errorf("listPods without response: %d %s", x.status, x.raw)
	}
	eq := url.Values{"command": {"listPods"}, "apiKey": {pair.APIKey}, "signature": {"AAAA"}}
	if x := ce.send(http.MethodGet, eq); x.status != 401 || !strings.HasPrefix(x.ctype, "text/xml") ||
		!bytes.Contains(x.raw, []byte("<errorcode>401</errorcode>")) || !bytes.Contains(x.raw, []byte(csAuthFailed)) {
		t.Errorf("XML 401: %d %s %s", x.status, x.ctype, x.raw)
	}

	// An async command's job in XML.
	jq := url.Values{"command": {"queryAsyncJobResult"}, "response": {"xml"}, "jobid": {"no-such-job"}}
	if x := ce.send(http.MethodGet, ce.signed(models.RoleReadOnly, jq)); x.status != 431 ||
		!bytes.Contains(x.raw, []byte("<queryasyncjobresultresponse cloud-stack-version=")) || !bytes.Contains(x.raw, []byte("<cserrorcode>4350</cserrorcode>")) {
		t.Errorf("XML queryAsyncJobResult error: %d %s", x.status, x.raw)
	}

	// listApis and listCapabilities.
	a := ce.cmd(models.RoleReadOnly, "listApis", "name", "listRouters")
	apis, _ := a.body["api"].([]any)
	if len(apis) != 1 {
		t.Fatalf("listApis listRouters: %s", a.raw)
	}
	api := apis[0].(map[string]any)
	if api["isasync"] != false || len(api["params"].([]any)) < 15 || len(api["response"].([]any)) < 20 {
		t.Errorf("listApis listRouters: %s", a.raw)
	}
	all := ce.cmd(models.RoleReadOnly, "listApis")
	for _, it := range all.body["api"].([]any) {
		if it.(map[string]any)["name"] == "rebootRouter" {
			t.Errorf("listApis shows rebootRouter to a read-only key")
		}
	}
	op := ce.cmd(models.RoleOperator, "listApis", "name", "rebootRouter")
	if ra := op.body["api"].([]any)[0].(map[string]any); ra["isasync"] != true {
		t.Errorf("rebootRouter isasync: %s", op.raw)
	}
	c := ce.cmd(models.RoleReadOnly, "listCapabilities")
	if cp, _ := c.body["capability"].(map[string]any); cp["cloudstackversion"] != csVersion {
		t.Errorf("listCapabilities: %s", c.raw)
	}
	// No Temporal: an async command is a 534 and leaves no job behind.
	wantCSError(t, ce.cmd(models.RoleOperator, "rebootRouter", "id", fx.r4), 534, "", "reboot without Temporal")
	wantCSError(t, ce.cmd(models.RoleReadOnly, "queryAsyncJobResult", "jobid", "no-such-job"), 431, "Unable to find job", "unknown job")
}

// TestCloudStackJobs runs async commands on a real Temporal dev server with no worker, so
// their runs stay pending: a job is the operation (same ID, pending as jobstatus 0), a second
// command on the same router is the engine's refusal (530, ConcurrentOperation, naming the
// running operation), and a canceled operation is a failed job (jobstatus 2).
func TestCloudStackJobs(t *testing.T) {
	tsrv := testenv.TemporalT(t, false)
	tc, err := tsrv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	store := modelstest.SQLite(t)
	ce := newCSEnvOnConfig(t, store, Config{Temporal: tc, Namespace: tsrv.Namespace})
	fx := ce.fx
	t.Cleanup(func() {
		var rows []models.Operation
		_ = store.DB.Where("run_id <> ''").Find(&rows).Error
		for _, r := range rows {
			_ = tc.TerminateWorkflow(context.Background(), r.WorkflowID, r.RunID, "test cleanup")
		}
	})

	r := ce.cmd(models.RoleOperator, "rebootRouter", "id", fx.r4)
	jobID, _ := r.body["jobid"].(string)
	if r.status != 200 || r.name != "rebootrouterresponse" || jobID == "" || r.body["id"] != fx.r4 {
		t.Fatalf("rebootRouter: %d %s", r.status, r.raw)
	}
	var op models.Operation
	modelstest.Must(t, store.Get(context.Background(), &op, jobID), "the job's operation")
	if op.Kind != "systemvm.reboot" || op.TargetID != fx.r4 || op.RequestedBy != "operator-key" || op.RunID == "" {
		t.Errorf("operation of job %s: %+v", jobID, op)
	}
	q := ce.cmd(models.RoleReadOnly, "queryAsyncJobResult", "jobid", jobID)
	if q.body["jobstatus"] != float64(0) || q.body["jobresultcode"] != float64(0) || q.body["jobresult"] != nil ||
		q.body["jobinstancetype"] != "DomainRouter" || q.body["jobinstanceid"] != fx.r4 ||
		q.body["cmd"] != "org.apache.cloudstack.api.command.admin.router.RebootRouterCmd" {
		t.Errorf("pending job: %s", q.raw)
	}
	second := ce.cmd(models.RoleOperator, "stopRouter", "id", fx.r4, "forced", "true")
	wantCSError(t, second, 530, jobID, "a second operation on the router")
	if second.body["cserrorcode"] != float64(4300) {
		t.Errorf("second operation cserrorcode %v, want 4300", second.body["cserrorcode"])
	}
	var n int64
	store.DB.Model(&models.Operation{}).Where("target_id = ?", fx.r4).Count(&n)
	if n != 1 {
		t.Errorf("%d operations on r-4 after the refused stop, want 1", n)
	}
	// Canceled through the REST API: the job has failed, with the reason.
	ce.want(ce.do("POST", "/operations/"+jobID+"/cancel", models.RoleOperator, nil), 202, "cancel")
	q = ce.cmd(models.RoleReadOnly, "queryAsyncJobResult", "jobid", jobID)
	res, _ := q.body["jobresult"].(map[string]any)
	if q.body["jobstatus"] != float64(2) || q.body["jobresultcode"] != float64(530) || res["errorcode"] != float64(530) ||
		res["errortext"] == "" || q.body["completed"] == nil {
		t.Errorf("canceled job: %s", q.raw)
	}
	l := ce.cmd(models.RoleReadOnly, "listAsyncJobs")
	if jobs, _ := l.body["asyncjobs"].([]any); len(jobs) != 1 || jobs[0].(map[string]any)["jobid"] != jobID {
		t.Errorf("listAsyncJobs: %s", l.raw)
	}
	// restartNetwork is a job on the network.
	rn := ce.cmd(models.RoleOperator, "restartNetwork", "id", fx.net1, "cleanup", "false")
	if rn.status != 200 || rn.body["id"] != fx.net1 || rn.body["jobid"] == nil {
		t.Fatalf("restartNetwork: %d %s", rn.status, rn.raw)
	}
	if q := ce.cmd(models.RoleReadOnly, "queryAsyncJobResult", "jobid", rn.body["jobid"].(string)); q.body["jobinstancetype"] != "Network" ||
		q.body["cmd"] != "org.apache.cloudstack.api.command.user.network.RestartNetworkCmd" {
		t.Errorf("restartNetwork job: %s", q.raw)
	}
	// runDiagnostics is a job on the router, RunDiagnosticsCmd, pending while no worker runs it.
	d := ce.cmd(models.RoleOperator, "runDiagnostics", "targetid", fx.r5, "ipaddress", "10.0.1.1", "type", "PING", "params", "-c 1")
	djob, _ := d.body["jobid"].(string)
	if d.status != 200 || d.name != "rundiagnosticsresponse" || djob == "" || d.body["id"] != fx.r5 {
		t.Fatalf("runDiagnostics: %d %s", d.status, d.raw)
	}
	if q := ce.cmd(models.RoleReadOnly, "queryAsyncJobResult", "jobid", djob); q.body["jobstatus"] != float64(0) ||
		q.body["jobinstancetype"] != "DomainRouter" || q.body["cmd"] != "org.apache.cloudstack.api.command.admin.diagnostics.RunDiagnosticsCmd" {
		t.Errorf("runDiagnostics job: %s", q.raw)
	}
	var dop models.Operation
	modelstest.Must(t, store.Get(context.Background(), &dop, djob), "the diagnostics operation")
	if dop.Kind != "systemvm.diagnostics" || dop.TargetID != fx.r5 {
		t.Errorf("diagnostics operation: %+v", dop)
	}
	// upgradeRouterTemplate answers the list of its jobs: the one upgrade operation.
	_, err = store.Settings.Set(context.Background(), "minreq.sysvmtemplate.version", models.ScopeGlobal, "", "4.15.0")
	modelstest.Must(t, err, "set minreq")
	u := ce.cmd(models.RoleOperator, "upgradeRouterTemplate", "zoneid", fx.zone1)
	jobs, _ := u.body["asyncjobs"].([]any)
	if u.status != 200 || u.name != "upgraderoutertemplateresponse" || u.body["count"] != float64(1) || len(jobs) != 1 {
		t.Fatalf("upgradeRouterTemplate: %d %s", u.status, u.raw)
	}
	ujob, _ := jobs[0].(map[string]any)["jobid"].(string)
	var uop models.Operation
	modelstest.Must(t, store.Get(context.Background(), &uop, ujob), "the upgrade operation")
	if uop.Kind != "router.upgrade" || uop.RunID == "" {
		t.Errorf("upgrade operation: %+v", uop)
	}
	if q := ce.cmd(models.RoleReadOnly, "queryAsyncJobResult", "jobid", ujob); q.body["jobstatus"] != float64(0) ||
		q.body["cmd"] != "org.apache.cloudstack.api.command.admin.router.UpgradeRouterTemplateCmd" {
		t.Errorf("upgrade job: %s", q.raw)
	}
	// patchSystemVm: a router upgrade of that router in mode patch (any router, forced passed
	// on); a CPVM or SSVM is refused naming id.
	pr := ce.cmd(models.RoleOperator, "patchSystemVm", "id", fx.r5, "forced", "true")
	pjob, _ := pr.body["jobid"].(string)
	if pr.status != 200 || pr.name != "patchsystemvmresponse" || pjob == "" || pr.body["id"] != fx.r5 {
		t.Fatalf("patchSystemVm: %d %s", pr.status, pr.raw)
	}
	var pop models.Operation
	modelstest.Must(t, store.Get(context.Background(), &pop, pjob), "the patch operation")
	if pop.Kind != "router.upgrade" || pop.TargetType != "router" || pop.TargetID != fx.r5 || pop.WorkflowID != "router-upgrade:router:"+fx.r5 {
		t.Errorf("patch operation: %+v", pop)
	}
	wantCSError(t, ce.cmd(models.RoleOperator, "patchSystemVm", "id", fx.ssvm1), 431, "virtual routers only", "patch an SSVM")
	wantCSError(t, ce.cmd(models.RoleOperator, "patchSystemVm", "id", fx.r5, "forced", "maybe"), 431, "forced", "bad forced")
	// registerTemplate answers the template as listTemplates does; its rollout is a job.
	rt := ce.cmd(models.RoleAdmin, "registerTemplate", "name", "systemvm-kvm-4.19.0", "format", "qcow2", "hypervisor", "KVM",
		"url", "http://127.0.0.1:1/systemvmtemplate-4.19.0-kvm.qcow2.bz2", "zoneid", "-1", "ostypeid", "x", "ispublic", "true")
	tpls, _ := rt.body["template"].([]any)
	if rt.status != 200 || rt.name != "registertemplateresponse" || len(tpls) != 1 {
		t.Fatalf("registerTemplate: %d %s", rt.status, rt.raw)
	}
	tpl := tpls[0].(map[string]any)
	var row models.Template
	modelstest.Must(t, store.Get(context.Background(), &row, tpl["id"].(string)), "the registered template")
	if row.Version != "4.19.0" || row.Format != "QCOW2" || tpl["crossZones"] != true || tpl["isready"] != false {
		t.Errorf("registered template %+v, answer %s", row, rt.raw)
	}
	var rollouts int64
	store.DB.Model(&models.Operation{}).Where("kind = ? AND target_type = ?", "template.rollout", TargetTemplate).Count(&rollouts)
	if rollouts != 1 {
		t.Errorf("%d template rollouts, want 1", rollouts)
	}
}

// TestCloudStackOperationCommands covers the commands of the later operations without
// Temporal: each refuses bad input naming the parameter (the REST operation's own check),
// needs its REST operation's role, and answers the synchronous ones in CloudStack's envelope.
func TestCloudStackOperationCommands(t *testing.T) {
	store := modelstest.SQLite(t)
	key, err := consoles.TokenKey(modelstest.TestKey)
	modelstest.Must(t, err, "token key")
	ce := newCSEnvOnConfig(t, store, Config{ConsoleTokenKey: key})
	fx := ce.fx
	ro, op, admin := models.RoleReadOnly, models.RoleOperator, models.RoleAdmin

	// listApis lists every new command with its async flag.
	for name, async := range map[string]bool{"upgradeRouterTemplate": false, "runDiagnostics": true, "getDiagnosticsData": true,
		"migrateSystemVm": true, "scaleSystemVm": true, "uploadCustomCertificate": false, "createConsoleEndpoint": false,
		"registerTemplate": false} {
		a := ce.cmd(admin, "listApis", "name", name)
		apis, _ := a.body["api"].([]any)
		if len(apis) != 1 || apis[0].(map[string]any)["isasync"] != async {
			t.Errorf("listApis %s: %s", name, a.raw)
		}
	}

	// Roles: the REST operation's.
	wantCSError(t, ce.cmd(ro, "upgradeRouterTemplate", "id", fx.r4), 401, "needs role operator", "read-only upgrade")
	wantCSError(t, ce.cmd(ro, "runDiagnostics", "targetid", fx.r4, "ipaddress", "10.0.1.1", "type", "ping"), 401, "needs role operator", "read-only diagnostics")
	wantCSError(t, ce.cmd(ro, "getDiagnosticsData", "targetid", fx.r4), 401, "needs role operator", "read-only data")
	wantCSError(t, ce.cmd(ro, "migrateSystemVm", "virtualmachineid", fx.ssvm1), 401, "needs role operator", "read-only migrate")
	wantCSError(t, ce.cmd(ro, "scaleSystemVm", "id", fx.ssvm1, "serviceofferingid", "x"), 401, "needs role operator", "read-only scale")
	wantCSError(t, ce.cmd(op, "uploadCustomCertificate", "certificate", "x"), 401, "needs role admin", "operator certificate")
	wantCSError(t, ce.cmd(ro, "createConsoleEndpoint", "virtualmachineid", fx.cpvm1), 401, "needs role operator", "read-only console")
	wantCSError(t, ce.cmd(op, "registerTemplate", "name", "t", "url", "u", "format", "QCOW2", "hypervisor", "KVM"), 401, "needs role admin", "operator template")

	// Missing and bad parameters, named.
	wantCSError(t, ce.cmd(op, "runDiagnostics", "targetid", fx.r4, "ipaddress", "10.0.1.1"), 431, "missing parameter type", "no type")
	wantCSError(t, ce.cmd(op, "runDiagnostics", "targetid", fx.r4, "ipaddress", "10.0.1.1", "type", "nmap"), 431, "type", "bad type")
	wantCSError(t, ce.cmd(op, "runDiagnostics", "targetid", fx.r4, "ipaddress", "10.0.1", "type", "ping"), 431, "ipaddress", "bad address")
	wantCSError(t, ce.cmd(op, "runDiagnostics", "targetid", fx.r4, "ipaddress", "10.0.1.1", "type", "ping", "params", "-c 1; reboot"), 431, "params", "shell in params")
	wantCSError(t, ce.cmd(op, "runDiagnostics", "targetid", "no-such-vm", "ipaddress", "10.0.1.1", "type", "ping"), 431, "targetid", "unknown target")
	wantCSError(t, ce.cmd(op, "runDiagnostics", "targetid", fx.ssvm2, "ipaddress", "10.0.1.1", "type", "ping"), 431, "Running", "stopped SSVM")
	wantCSError(t, ce.cmd(op, "getDiagnosticsData", "targetid", fx.r4, "files", "/etc/hosts,relative/x"), 431, "files", "relative file")
	wantCSError(t, ce.cmd(op, "migrateSystemVm", "virtualmachineid", fx.ssvm1, "hostid", fx.host2), 431, "hostid", "host of another cluster")
	wantCSError(t, ce.cmd(op, "migrateSystemVm"), 431, "missing parameter virtualmachineid", "no vm")
	wantCSError(t, ce.cmd(op, "scaleSystemVm", "id", fx.ssvm1, "serviceofferingid", "no-such-offering"), 431, "serviceofferingid", "unknown offering")
	wantCSError(t, ce.cmd(op, "scaleSystemVm", "id", fx.ssvm1), 431, "missing parameter serviceofferingid", "no offering")
	wantCSError(t, ce.cmd(op, "upgradeRouterTemplate", "zoneid", fx.zone1, "podid", fx.pod1), 431, "", "two selectors")
	wantCSError(t, ce.cmd(op, "upgradeRouterTemplate", "account", "admin"), 431, "domainid", "account without domainid")
	wantCSError(t, ce.cmd(op, "upgradeRouterTemplate", "id", "no-such-router"), 431, "", "unknown router")
	wantCSError(t, ce.cmd(admin, "uploadCustomCertificate", "certificate", "not a PEM", "name", "root1", "id", "1"), 431, "certificate", "bad PEM")
	wantCSError(t, ce.cmd(admin, "uploadCustomCertificate", "certificate", "x", "id", "one"), 431, "id must be an integer", "bad id")
	wantCSError(t, ce.cmd(op, "createConsoleEndpoint", "virtualmachineid", "no-such-vm"), 431, "virtualmachineid", "unknown console VM")
	wantCSError(t, ce.cmd(admin, "registerTemplate", "name", "systemvm-kvm-4.19.0", "url", "http://127.0.0.1:1/systemvmtemplate-4.19.0-kvm.qcow2.bz2",
		"format", "OVA", "hypervisor", "KVM"), 431, "format", "OVA for KVM")
	wantCSError(t, ce.cmd(admin, "registerTemplate", "name", "systemvm-kvm", "url", "http://127.0.0.1:1/systemvmtemplate-kvm.qcow2.bz2",
		"format", "QCOW2", "hypervisor", "KVM"), 431, "version", "no release number anywhere")
	wantCSError(t, ce.cmd(admin, "registerTemplate", "name", "systemvm-kvm-4.19.0", "url", "http://127.0.0.1:1/systemvmtemplate-4.19.0-kvm.qcow2.bz2",
		"format", "QCOW2", "hypervisor", "KVM", "zoneid", "no-such-zone"), 431, "zoneid", "unknown zone")

	// Valid asynchronous commands without Temporal: 534, and no operation journaled.
	wantCSError(t, ce.cmd(op, "runDiagnostics", "targetid", fx.r4, "ipaddress", "10.0.1.1", "type", "ping"), 534, "", "diagnostics without Temporal")
	var n int64
	store.DB.Model(&models.Operation{}).Count(&n)
	if n != 0 {
		t.Errorf("%d operations after refused commands, want 0", n)
	}

	// uploadCustomCertificate: stored at once, the message says so; the key is never answered.
	p := certtest.NewPKI("*.consoleproxy.example.com", certtest.P256)
	u := ce.cmd(admin, "uploadCustomCertificate", "certificate", p.Root.CertPEM(), "name", "root1", "id", "1")
	cc, _ := u.body["customcertificate"].(map[string]any)
	if u.status != 200 || u.name != "uploadcustomcertificateresponse" || !strings.Contains(fmt.Sprint(cc["message"]), "root1 version 1") {
		t.Errorf("uploadCustomCertificate root: %d %s", u.status, u.raw)
	}
	if r := ce.cmd(admin, "uploadCustomCertificate", "certificate", p.Intermediate.CertPEM(), "name", "intermed1", "id", "2"); r.status != 200 {
		t.Errorf("uploadCustomCertificate intermediate: %d %s", r.status, r.raw)
	}
	s := ce.cmd(admin, "uploadCustomCertificate", "certificate", p.Server.CertPEM(), "privatekey", p.Server.KeyPEM(),
		"domainsuffix", "*.consoleproxy.example.com")
	if s.status != 200 || bytes.Contains(s.raw, []byte("PRIVATE KEY")) {
		t.Errorf("uploadCustomCertificate server: %d %s", s.status, s.raw)
	}
	var certs int64
	store.DB.Model(&models.Certificate{}).Count(&certs)
	if certs != 3 {
		t.Errorf("%d certificates stored, want 3", certs)
	}

	// createConsoleEndpoint through the running CPVM of the zone.
	c := ce.cmd(op, "createConsoleEndpoint", "virtualmachineid", fx.ssvm1)
	ep, _ := c.body["consoleendpoint"].(map[string]any)
	if c.status != 200 || c.name != "createconsoleendpointresponse" || ep["success"] != true || !strings.Contains(fmt.Sprint(ep["url"]), "token=") {
		t.Errorf("createConsoleEndpoint: %d %s", c.status, c.raw)
	}
}
