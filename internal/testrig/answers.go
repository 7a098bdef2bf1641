package testrig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Answers keeps the last answers the agent gave one client's health queries
// (/v1/health/...): when, what was asked, and what came back (status, the
// X-Consul-Index, -KnownLeader and -LastContact headers, the body). A test
// that fails on what lbctl rendered prints them: what Consul said, not what
// lbctl made of it.
type Answers struct {
	mu   sync.Mutex
	keep int
	all  []Answer
}

// Answer is one recorded answer.
type Answer struct {
	At          time.Time
	Request     string // path and query
	Status      int
	Index       string
	KnownLeader string
	LastContact string
	Body        string // the entries and their checks (summary)
	Err         error
}

func (a Answer) String() string {
	if a.Err != nil {
		return fmt.Sprintf("%s %s: %v", a.At.Format("15:04:05.000000"), a.Request, a.Err)
	}
	return fmt.Sprintf("%s %s: %d index=%s known_leader=%s last_contact=%s %s",
		a.At.Format("15:04:05.000000"), a.Request, a.Status, a.Index, a.KnownLeader, a.LastContact, a.Body)
}

// RecordingClient is a client for the agent, as c.Client (consul/api's
// default transport), whose health answers (the last 200) are kept in the
// Answers returned with it.
func (c *Consul) RecordingClient() (*api.Client, *Answers) {
	c.t.Helper()
	a := &Answers{keep: 200}
	client, err := api.NewClient(&api.Config{Address: c.Addr,
		HttpClient: &http.Client{Transport: recorder{api.DefaultConfig().Transport, a}}})
	if err != nil {
		c.t.Fatalf("consul client: %v", err)
	}
	return client, a
}

// List is every kept answer, oldest first.
func (a *Answers) List() []Answer {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Answer(nil), a.all...)
}

// String is every kept answer, one a line.
func (a *Answers) String() string {
	var b strings.Builder
	for _, x := range a.List() {
		b.WriteString(x.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func (a *Answers) add(x Answer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.all = append(a.all, x)
	if len(a.all) > a.keep {
		a.all = a.all[len(a.all)-a.keep:]
	}
}

type recorder struct {
	rt http.RoundTripper
	a  *Answers
}

func (r recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.rt.RoundTrip(req)
	if !strings.HasPrefix(req.URL.Path, "/v1/health/") {
		return resp, err
	}
	x := Answer{At: time.Now(), Request: req.URL.RequestURI(), Err: err}
	if err != nil {
		r.a.add(x)
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	x.Status, x.Err = resp.StatusCode, err
	x.Index, x.KnownLeader = resp.Header.Get("X-Consul-Index"), resp.Header.Get("X-Consul-Knownleader")
	x.LastContact = resp.Header.Get("X-Consul-Lastcontact")
	x.Body = summary(body)
	r.a.add(x)
	return resp, nil
}

// summary is a health answer's entries, one instance each with its checks
// ("[greeter-alpha 127.0.0.1:7001 on lbctl-test, checks serfHealth=passing]"),
// or the body itself (up to 2,000 bytes) when it is not a list of entries.
func summary(body []byte) string {
	var entries []api.ServiceEntry
	if err := json.Unmarshal(body, &entries); err != nil || (len(entries) > 0 && entries[0].Service == nil) {
		return string(body[:min(len(body), 2000)])
	}
	var b strings.Builder
	b.WriteString("[")
	for i, e := range entries {
		if i > 0 {
			b.WriteString("; ")
		}
		node := ""
		if e.Node != nil {
			node = e.Node.Node
		}
		fmt.Fprintf(&b, "%s %s:%d on %s, checks", e.Service.ID, e.Service.Address, e.Service.Port, node)
		for _, c := range e.Checks {
			fmt.Fprintf(&b, " %s=%s", c.CheckID, c.Status)
		}
	}
	b.WriteString("]")
	return b.String()
}
