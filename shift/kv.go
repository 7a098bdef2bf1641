package shift

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hashicorp/consul/api"
)

// ErrConflict is returned by Store.Save when the split changed since it was read.
var ErrConflict = errors.New("the split was changed by someone else")

// KV reads and writes splits in Consul KV. Every write is a check-and-set
// on the index last read, so a split is never half-written or overwritten
// unseen: each step's split lands whole, or not at all.
type KV struct {
	kv *api.KV
}

// NewKV stores splits through client.
func NewKV(client *api.Client) *KV { return &KV{kv: client.KV()} }

// Load returns service's split and its modify index; index 0 and a zero
// Split when there is none.
func (k *KV) Load(ctx context.Context, service string) (Split, uint64, error) {
	pair, _, err := k.kv.Get(SplitKey(service), (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return Split{}, 0, fmt.Errorf("read split of %s: %w", service, err)
	}
	if pair == nil {
		return Split{}, 0, nil
	}
	s, err := decodeSplit(pair)
	if err != nil {
		return Split{}, pair.ModifyIndex, err
	}
	return s, pair.ModifyIndex, nil
}

// Save writes s if the key's modify index is still index (0: the key must
// not exist yet) and returns the new index. ErrConflict when it changed.
func (k *KV) Save(ctx context.Context, s Split, index uint64) (uint64, error) {
	if err := s.Validate(); err != nil {
		return 0, fmt.Errorf("write split of %s: %w", s.Service, err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return 0, fmt.Errorf("encode split of %s: %w", s.Service, err)
	}
	ops := api.KVTxnOps{{Verb: api.KVCAS, Key: SplitKey(s.Service), Value: data, Index: index}}
	ok, resp, _, err := k.kv.Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("write split of %s: %w", s.Service, err)
	}
	if !ok || resp == nil || len(resp.Results) != 1 {
		return 0, fmt.Errorf("write split of %s: %w", s.Service, ErrConflict)
	}
	return resp.Results[0].ModifyIndex, nil
}

// List returns every valid split under SplitPrefix by service, the KV index
// of the answer, and one error per key that was not a valid split.
func List(pairs api.KVPairs) (map[string]Split, []error) {
	splits := map[string]Split{}
	var bad []error
	for _, p := range pairs {
		s, err := decodeSplit(p)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		splits[s.Service] = s
	}
	return splits, bad
}

// decodeSplit parses and validates one KV pair; its service must match the key.
func decodeSplit(p *api.KVPair) (Split, error) {
	var s Split
	if err := json.Unmarshal(p.Value, &s); err != nil {
		return Split{}, fmt.Errorf("%s: %w: %v", p.Key, ErrInvalidSplit, err)
	}
	if err := s.Validate(); err != nil {
		return Split{}, fmt.Errorf("%s: %w", p.Key, err)
	}
	if SplitKey(s.Service) != p.Key {
		return Split{}, fmt.Errorf("%s: %w: names service %q", p.Key, ErrInvalidSplit, s.Service)
	}
	return s, nil
}
