// TEMPORARY: the contract of package live, until the lua branch is merged.
package live

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

const Dict = "lbctl_live"

type Peer struct {
	Host   string `json:"host"`
	Port   int    `json:"port"`
	Weight int    `json:"weight"`
	ID     string `json:"id,omitempty"`
}
type Upstream struct {
	Version string `json:"version"`
	Peers   []Peer `json:"peers"`
}
type Set map[string]Upstream

func NewUpstream(peers []Peer) Upstream { return Upstream{Version: VersionOf(peers), Peers: peers} }
func VersionOf(peers []Peer) string {
	b, _ := json.Marshal(peers)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

type Client struct{ socket string }

func NewClient(socket string) *Client { return &Client{socket} }
func (c *Client) Push(ctx context.Context, set Set, prune bool) (map[string]string, error) {
	return nil, nil
}
func (c *Client) Read(ctx context.Context) (Set, error) { return nil, nil }

type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return e.Reason }

func WriteSeed(path string, set Set) error         { return nil }
func HTTPConfig(socket, seed, dictSize string) string { return "" }
