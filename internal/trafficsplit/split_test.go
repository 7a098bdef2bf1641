package trafficsplit

import (
	"errors"
	"testing"
)

func TestValidateRejectsHostileSplits(t *testing.T) {
	good := Split{Service: "greeter", From: "blue", To: "green", State: Running}.At(10)
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*Split){
		"directive in tag":  func(s *Split) { s.To = "green;\n}" },
		"same tags":         func(s *Split) { s.To = "blue"; s.Weights = map[string]int{"blue": 100} },
		"sum not 100":       func(s *Split) { s.Weights["green"] = 20 },
		"negative":          func(s *Split) { s.Weights = map[string]int{"blue": 110, "green": -10} },
		"third tag":         func(s *Split) { s.Weights = map[string]int{"blue": 90, "red": 10} },
		"unknown state":     func(s *Split) { s.State = "weird" },
		"service with path": func(s *Split) { s.Service = "../x" },
	}
	for name, mutate := range cases {
		s := good.At(10)
		mutate(&s)
		if err := s.Validate(); !errors.Is(err, ErrInvalidSplit) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}
