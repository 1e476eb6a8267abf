// netpol-verdict answers, for each flow it is given, whether the NetworkPolicies it is given
// let it through: the tests' question to an independent NetworkPolicy engine (cyclonus's
// matcher, which cyclonus checks against real CNIs), rather than to one written beside the
// policies it judges.
//
// stdin:  {"policies": [NetworkPolicy, ...], "traffic": [cyclonus matcher.Traffic, ...]}
// stdout: [{"ingress": bool, "egress": bool}, ...], one per traffic, in order
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	networkingv1 "k8s.io/api/networking/v1"
)

type question struct {
	Policies []*networkingv1.NetworkPolicy `json:"policies"`
	Traffic  []*matcher.Traffic            `json:"traffic"`
}

type verdict struct {
	Ingress bool `json:"ingress"`
	Egress  bool `json:"egress"`
}

func main() {
	var q question
	decoder := json.NewDecoder(os.Stdin)
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&q); err != nil {
		fmt.Fprintf(os.Stderr, "netpol-verdict: reading the question: %v\n", err)
		os.Exit(2)
	}
	// Not simplified: the verdict of each policy exactly as written.
	policy := matcher.BuildNetworkPolicies(false, q.Policies)
	verdicts := make([]verdict, len(q.Traffic))
	for i, traffic := range q.Traffic {
		result := policy.IsTrafficAllowed(traffic)
		verdicts[i] = verdict{Ingress: result.Ingress.IsAllowed(), Egress: result.Egress.IsAllowed()}
	}
	if err := json.NewEncoder(os.Stdout).Encode(verdicts); err != nil {
		fmt.Fprintf(os.Stderr, "netpol-verdict: %v\n", err)
		os.Exit(1)
	}
}
