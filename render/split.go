package render

import (
	"fmt"
	"slices"

	"github.com/lbctl/lbctl/catalog"
	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/trafficsplit"
)

// splitView is what rendering needs of a service's split (package shift):
// comparable, so the block cache can tell whether it changed.
type splitView struct {
	From, To               string
	FromPercent, ToPercent int
	State                  string
	// Note says when the split could not be served as written.
	Note string
}

// splitViewOf is svc's split when svc follows shifts and KV holds a valid
// one for it; nil otherwise.
func splitViewOf(svc config.Service, splits map[string]trafficsplit.Split) *splitView {
	s, ok := splits[svc.Name]
	if !svc.Shift || !ok || s.Service != svc.Name || s.Validate() != nil {
		return nil
	}
	return &splitView{From: s.From, To: s.To, FromPercent: s.FromPercent(), ToPercent: s.ToPercent(), State: string(s.State)}
}

// selectInstances keeps the instances svc serves and the split tag of each
// ("" without a split). The query behind a shift service has no tag filter,
// so the filtering happens here: the split's two tags, or the service's tag.
func selectInstances(svc config.Service, split *splitView, in []catalog.Instance) (kept []catalog.Instance, tags []string, problems []Problem) {
	for _, i := range in {
		switch {
		case split != nil:
			hasFrom, hasTo := slices.Contains(i.Tags, split.From), slices.Contains(i.Tags, split.To)
			if hasFrom && hasTo {
				problems = append(problems, Problem{svc.Name, i.ID, fmt.Sprintf("carries both %s and %s; left out of the split", split.From, split.To)})
				continue
			}
			if hasFrom || hasTo {
				tag := split.To
				if hasFrom {
					tag = split.From
				}
				kept, tags = append(kept, i), append(tags, tag)
			}
		case svc.Shift && svc.Tag != "":
			if slices.Contains(i.Tags, svc.Tag) {
				kept, tags = append(kept, i), append(tags, "")
			}
		default:
			kept, tags = append(kept, i), append(tags, "")
		}
	}
	return kept, tags, problems
}

// maxSplitWeight caps rendered weights; above it they are scaled down.
const maxSplitWeight = 10000

// applySplit turns each server's weight into its share of the split: a tag
// with p% of the calls and servers of total weight S gets, per server of
// weight w, w*p*S_other, so the tags' totals stand exactly p_from : p_to;
// then every weight is divided by their GCD. A tag at 0% gets no server;
// a tag with no passing server gets none and the other tag takes all calls.
func applySplit(servers []upstreamServer, split *splitView) []upstreamServer {
	sum := map[string]int{}
	for _, s := range servers {
		sum[s.Tag] += s.Weight
	}
	share := map[string]int{split.From: split.FromPercent, split.To: split.ToPercent}
	for _, pair := range [][2]string{{split.From, split.To}, {split.To, split.From}} {
		empty, other := pair[0], pair[1]
		if sum[empty] == 0 && share[empty] > 0 && sum[other] > 0 {
			split.Note = fmt.Sprintf("%s has no passing instance, so %s takes all calls", empty, other)
			share[empty], share[other] = 0, 100
		}
	}
	var out []upstreamServer
	for _, s := range servers {
		if share[s.Tag] == 0 {
			continue
		}
		otherSum := sum[split.To]
		if s.Tag == split.To {
			otherSum = sum[split.From]
		}
		s.Weight *= share[s.Tag] * max(otherSum, 1)
		out = append(out, s)
	}
	return normalizeWeights(out)
}

// normalizeWeights divides weights by their GCD and scales them down to
// maxSplitWeight when still larger (then only approximately in proportion).
func normalizeWeights(servers []upstreamServer) []upstreamServer {
	g, top := 0, 0
	for _, s := range servers {
		g, top = gcd(g, s.Weight), max(top, s.Weight)
	}
	for i := range servers {
		w := servers[i].Weight / g
		if top/g > maxSplitWeight {
			w = max(1, int(int64(w)*maxSplitWeight/int64(top/g)))
		}
		servers[i].Weight = w
	}
	return servers
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
