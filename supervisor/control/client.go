package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// Client talks to a running lbctl's control socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{socket: path, http: &http.Client{Transport: tr}}
}

// Status fetches every program's status.
func (c *Client) Status(ctx context.Context) (*StatusReply, error) {
	var reply StatusReply
	if err := c.do(ctx, http.MethodGet, "/v1/status", &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// Act runs start, stop or restart on a program, waiting for it to finish.
func (c *Client) Act(ctx context.Context, action, program string) error {
	return c.do(ctx, http.MethodPost, "/v1/programs/"+url.PathEscape(program)+"/"+url.PathEscape(action), nil)
}

// Signal sends a signal (a name such as USR1) to a program's main process.
func (c *Client) Signal(ctx context.Context, program, signal string) error {
	return c.do(ctx, http.MethodPost, "/v1/programs/"+url.PathEscape(program)+"/signal?signal="+url.QueryEscape(signal), nil)
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://lbctl"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorReply
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return &Error{Code: resp.StatusCode, Msg: e.Error}
		}
		return &Error{Code: resp.StatusCode, Msg: resp.Status}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("control socket reply: %w", err)
	}
	return nil
}

// Error is a request the running lbctl refused.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
