// Command argocd-lua runs mlrollout's Argo CD health check and resource actions through Argo CD's own
// code (github.com/argoproj/argo-cd/v3/util/lua and util/settings), the way the Argo CD application
// controller and API server run them. It is a test harness: pytest feeds it objects and checks what
// Argo CD would show and patch (docs/argocd.md, "How it is tested").
//
//	argocd-lua eval < request.json > answers.json
//	argocd-lua upstream DIR     # Argo CD's own test format: DIR/health_test.yaml, DIR/actions/action_test.yaml
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"

	jsonpatch "github.com/evanphx/json-patch"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	applicationpkg "github.com/argoproj/argo-cd/v3/pkg/apiclient/application"
	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	argolua "github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
)

// Request is one batch: the scripts, installed one way, and the objects to run them on.
type Request struct {
	// ConfigMap is an argocd-cm manifest (YAML or JSON): the scripts are user overrides read by Argo CD's
	// settings manager, exactly as installed from docs/argocd.md.
	ConfigMap string `json:"configMap,omitempty"`
	// Builtin holds the files of resource_customizations/<group>/<Kind>/, run as Argo CD runs a built-in
	// customization (the health check with the Lua standard libraries, actions without).
	Builtin *Builtin `json:"builtin,omitempty"`
	Cases   []Case   `json:"cases"`
}

// Builtin is the content of an upstream resource_customizations folder.
type Builtin struct {
	Health    string            `json:"health"`
	Discovery string            `json:"discovery"`
	Actions   map[string]string `json:"actions"`
}

// Case is one object and what to do with it.
type Case struct {
	ID        string         `json:"id"`
	Object    map[string]any `json:"object"`
	Health    bool           `json:"health"`
	Discovery bool           `json:"discovery"`
	Actions   []ActionCall   `json:"actions"`
}

// ActionCall names an action and its parameters (Argo CD passes them as strings).
type ActionCall struct {
	Name   string            `json:"name"`
	Params map[string]string `json:"params,omitempty"`
}

// Answer is what Argo CD made of one case.
type Answer struct {
	ID        string           `json:"id"`
	Health    *HealthAnswer    `json:"health,omitempty"`
	Discovery *DiscoveryAnswer `json:"discovery,omitempty"`
	Actions   []ActionAnswer   `json:"actions,omitempty"`
}

// HealthAnswer is the status Argo CD shows, or the error it shows instead.
type HealthAnswer struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

// DiscoveryAnswer lists the actions Argo CD offers, sorted by name.
type DiscoveryAnswer struct {
	Actions []appv1.ResourceAction `json:"actions"`
	Error   string                 `json:"error,omitempty"`
}

// ActionAnswer is the outcome of running one action: the objects it returns and, for a patch, the merge
// patch the API server would send (computed as server/application.patchResource does).
type ActionAnswer struct {
	Name     string     `json:"name"`
	Error    string     `json:"error,omitempty"`
	Impacted []Impacted `json:"impacted,omitempty"`
}

// Impacted is one object an action returns.
type Impacted struct {
	Operation string         `json:"operation"`
	Object    map[string]any `json:"object"`
	// MergePatch is nil when the action changed nothing (Argo CD then sends no request).
	MergePatch map[string]any `json:"mergePatch"`
	// TouchesStatus is true when Argo CD would also patch the status subresource.
	TouchesStatus bool `json:"touchesStatus"`
}

// engine runs the three kinds of script one way.
type engine interface {
	health(obj *unstructured.Unstructured) (string, string, error)
	discovery(obj *unstructured.Unstructured) ([]appv1.ResourceAction, error)
	action(obj *unstructured.Unstructured, name string, params []*applicationpkg.ResourceActionParameters) ([]argolua.ImpactedResource, error)
}

// overrides runs user overrides from argocd-cm, through the calls the controller and API server make.
type overrides struct {
	o map[string]appv1.ResourceOverride
}

func (e overrides) health(obj *unstructured.Unstructured) (string, string, error) {
	hs, err := argolua.ResourceHealthOverrides(e.o).GetResourceHealth(obj)
	if err != nil {
		return "", "", err
	}
	if hs == nil {
		return "", "", errors.New("no health check is configured for this kind")
	}
	return string(hs.Status), hs.Message, nil
}

func (e overrides) discovery(obj *unstructured.Unstructured) ([]appv1.ResourceAction, error) {
	vm := argolua.VM{ResourceOverrides: e.o} // as server/application.getAvailableActions
	scripts, err := vm.GetResourceActionDiscovery(obj)
	if err != nil {
		return nil, err
	}
	if len(scripts) == 0 {
		return []appv1.ResourceAction{}, nil
	}
	return vm.ExecuteResourceActionDiscovery(obj, scripts)
}

func (e overrides) action(obj *unstructured.Unstructured, name string, params []*applicationpkg.ResourceActionParameters) ([]argolua.ImpactedResource, error) {
	vm := argolua.VM{ResourceOverrides: e.o} // as server/application.RunResourceActionV2
	def, err := vm.GetResourceAction(obj, name)
	if err != nil {
		return nil, err
	}
	return vm.ExecuteResourceAction(obj, def.ActionLua, params)
}

// builtin runs the scripts as Argo CD runs the files it embeds from resource_customizations/: GetHealthScript
// returns useOpenLibs=true for a built-in health check; the API server runs discovery and actions in a VM
// without the standard libraries (lua.VM{} with only the overrides set), built-in or not.
type builtin struct{ b Builtin }

func (e builtin) health(obj *unstructured.Unstructured) (string, string, error) {
	hs, err := argolua.VM{UseOpenLibs: true}.ExecuteHealthLua(obj, e.b.Health)
	if err != nil {
		return "", "", err
	}
	return string(hs.Status), hs.Message, nil
}

func (e builtin) discovery(obj *unstructured.Unstructured) ([]appv1.ResourceAction, error) {
	return argolua.VM{}.ExecuteResourceActionDiscovery(obj, []string{e.b.Discovery})
}

func (e builtin) action(obj *unstructured.Unstructured, name string, params []*applicationpkg.ResourceActionParameters) ([]argolua.ImpactedResource, error) {
	script, ok := e.b.Actions[name]
	if !ok {
		// The message Argo CD gives for an action with no action.lua (getPredefinedLuaScripts).
		return nil, errors.New("built-in script does not exist")
	}
	return argolua.VM{}.ExecuteResourceAction(obj, script, params)
}

// overridesFromConfigMap reads argocd-cm with Argo CD's settings manager over a fake API server, so the
// keys, their split form and the part-of label are interpreted by Argo CD itself.
func overridesFromConfigMap(manifest string) (map[string]appv1.ResourceOverride, error) {
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict([]byte(manifest), &cm); err != nil {
		return nil, fmt.Errorf("argocd-cm: %w", err)
	}
	namespace := cm.Namespace
	if namespace == "" {
		namespace = "argocd"
		cm.Namespace = namespace
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: "argocd-secret", Namespace: namespace,
		Labels: map[string]string{"app.kubernetes.io/part-of": "argocd"},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr := settings.NewSettingsManager(ctx, fake.NewClientset(&cm, secret), namespace)
	return mgr.GetResourceOverrides()
}

func params(m map[string]string) []*applicationpkg.ResourceActionParameters {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]*applicationpkg.ResourceActionParameters, 0, len(m))
	for _, k := range names {
		name, value := k, m[k]
		out = append(out, &applicationpkg.ResourceActionParameters{Name: &name, Value: &value})
	}
	return out
}

// patchOf is what server/application.patchResource sends for a patch: a JSON merge patch from the live
// object to the returned one; "{}" means no request at all.
func patchOf(live *unstructured.Unstructured, changed *unstructured.Unstructured) (map[string]any, bool, error) {
	liveBytes, err := json.Marshal(live)
	if err != nil {
		return nil, false, err
	}
	newBytes, err := json.Marshal(changed)
	if err != nil {
		return nil, false, err
	}
	diff, err := jsonpatch.CreateMergePatch(liveBytes, newBytes)
	if err != nil {
		return nil, false, err
	}
	if string(diff) == "{}" {
		return nil, false, nil
	}
	var patch map[string]any
	if err := json.Unmarshal(diff, &patch); err != nil {
		return nil, false, err
	}
	_, status := patch["status"]
	return patch, status, nil
}

func runCase(e engine, c Case) Answer {
	ans := Answer{ID: c.ID}
	// Each call gets its own copy: a script may change the table it is given.
	fresh := func() *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: runtimeCopy(c.Object)}
	}
	if c.Health {
		status, message, err := e.health(fresh())
		ans.Health = &HealthAnswer{Status: status, Message: message}
		if err != nil {
			ans.Health = &HealthAnswer{Error: err.Error()}
		}
	}
	if c.Discovery {
		actions, err := e.discovery(fresh())
		sort.Slice(actions, func(i, j int) bool { return actions[i].Name < actions[j].Name })
		ans.Discovery = &DiscoveryAnswer{Actions: actions}
		if err != nil {
			ans.Discovery = &DiscoveryAnswer{Actions: []appv1.ResourceAction{}, Error: err.Error()}
		}
	}
	for _, call := range c.Actions {
		out := ActionAnswer{Name: call.Name}
		live := fresh()
		impacted, err := e.action(fresh(), call.Name, params(call.Params))
		if err != nil {
			out.Error = err.Error()
		}
		for _, ir := range impacted {
			item := Impacted{Operation: string(ir.K8SOperation), Object: ir.UnstructuredObj.Object}
			if ir.K8SOperation == argolua.PatchOperation {
				patch, status, perr := patchOf(live, ir.UnstructuredObj)
				if perr != nil {
					out.Error = perr.Error()
				}
				item.MergePatch, item.TouchesStatus = patch, status
			}
			out.Impacted = append(out.Impacted, item)
		}
		ans.Actions = append(ans.Actions, out)
	}
	return ans
}

// runtimeCopy deep-copies a JSON object and turns its numbers into int64 where they are whole, as the
// API server's decoder (and so Argo CD's live objects) do.
func runtimeCopy(m map[string]any) map[string]any {
	raw, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		// Not a Kubernetes object (no kind/apiVersion): keep the plain JSON decoding.
		var plain map[string]any
		if jerr := json.Unmarshal(raw, &plain); jerr != nil {
			panic(jerr)
		}
		return plain
	}
	return obj.Object
}

func eval(in io.Reader, out io.Writer) error {
	var req Request
	dec := json.NewDecoder(in)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	var e engine
	switch {
	case req.ConfigMap != "" && req.Builtin == nil:
		o, err := overridesFromConfigMap(req.ConfigMap)
		if err != nil {
			return err
		}
		e = overrides{o}
	case req.Builtin != nil && req.ConfigMap == "":
		e = builtin{*req.Builtin}
	default:
		return errors.New("request: give exactly one of configMap and builtin")
	}
	answers := make([]Answer, 0, len(req.Cases))
	for _, c := range req.Cases {
		answers = append(answers, runCase(e, c))
	}
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	return enc.Encode(answers)
}

func main() {
	var err error
	switch {
	case len(os.Args) == 2 && os.Args[1] == "eval":
		err = eval(os.Stdin, os.Stdout)
	case len(os.Args) == 3 && os.Args[1] == "upstream":
		err = upstream(os.Args[2], os.Stdout)
	default:
		err = errors.New("usage: argocd-lua eval < request.json | argocd-lua upstream DIR")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua:", err)
		os.Exit(1)
	}
}

// The rest runs an upstream folder's own tests the way Argo CD's util/lua tests do (TestLuaHealthScript,
// TestLuaResourceActionsScript): health_test.yaml with exact status and message, discovery results
// contained in the expected list, action outputs equal to the expected object.

type healthTests struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
	} `json:"tests"`
}

type actionTests struct {
	DiscoveryTests []struct {
		InputPath string                 `json:"inputPath"`
		Result    []appv1.ResourceAction `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action               string            `json:"action"`
		InputPath            string            `json:"inputPath"`
		ExpectedOutputPath   string            `json:"expectedOutputPath"`
		ExpectedErrorMessage string            `json:"expectedErrorMessage"`
		Parameters           map[string]string `json:"parameters"`
	} `json:"actionTests"`
}

func readYAML(path string, into any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.UnmarshalStrict(raw, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func readObject(path string) (*unstructured.Unstructured, error) {
	obj := map[string]any{}
	if err := readYAML(path, &obj); err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: obj}, nil
}

// normalized is an object as JSON numbers see it, so 3 and 3.0 compare equal (Lua returns floats).
func normalized(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(raw, &out)
	return out, err
}

func loadBuiltin(dir string) (Builtin, error) {
	b := Builtin{Actions: map[string]string{}}
	read := func(p string) (string, error) {
		raw, err := os.ReadFile(filepath.Join(dir, p))
		return string(raw), err
	}
	var err error
	if b.Health, err = read("health.lua"); err != nil {
		return b, err
	}
	if b.Discovery, err = read("actions/discovery.lua"); err != nil {
		return b, err
	}
	entries, err := os.ReadDir(filepath.Join(dir, "actions"))
	if err != nil {
		return b, err
	}
	for _, entry := range entries {
		if !entry.IsDir() || entry.Name() == "testdata" {
			continue
		}
		if b.Actions[entry.Name()], err = read(filepath.Join("actions", entry.Name(), "action.lua")); err != nil {
			return b, err
		}
	}
	return b, nil
}

func upstream(dir string, out io.Writer) error {
	b, err := loadBuiltin(dir)
	if err != nil {
		return err
	}
	e := builtin{b}
	passed, failed := 0, 0
	report := func(name string, problem error) {
		if problem == nil {
			passed++
			fmt.Fprintf(out, "ok   %s\n", name)
			return
		}
		failed++
		fmt.Fprintf(out, "FAIL %s: %v\n", name, problem)
	}

	var ht healthTests
	if err := readYAML(filepath.Join(dir, "health_test.yaml"), &ht); err != nil {
		return err
	}
	for _, t := range ht.Tests {
		name := "health/" + t.InputPath
		obj, err := readObject(filepath.Join(dir, t.InputPath))
		if err != nil {
			report(name, err)
			continue
		}
		// As TestLuaHealthScript: a VM with the standard libraries, the health script, exact equality.
		status, message, err := e.health(obj)
		switch {
		case err != nil:
			report(name, err)
		case status != t.HealthStatus.Status || message != t.HealthStatus.Message:
			report(name, fmt.Errorf("got %s %q, want %s %q", status, message, t.HealthStatus.Status, t.HealthStatus.Message))
		default:
			report(name, nil)
		}
	}

	actionsDir := filepath.Join(dir, "actions")
	var at actionTests
	if err := readYAML(filepath.Join(actionsDir, "action_test.yaml"), &at); err != nil {
		return err
	}
	for _, t := range at.DiscoveryTests {
		name := "discovery/" + t.InputPath
		obj, err := readObject(filepath.Join(actionsDir, t.InputPath))
		if err != nil {
			report(name, err)
			continue
		}
		// Argo CD's test runs discovery with the standard libraries; the API server without: both must hold.
		var problem error
		for _, vm := range []argolua.VM{{UseOpenLibs: true}, {}} {
			got, err := vm.ExecuteResourceActionDiscovery(obj, []string{b.Discovery})
			if err != nil {
				problem = err
				break
			}
			if len(got) != len(t.Result) {
				problem = fmt.Errorf("useOpenLibs=%v: %d actions, want %d: %+v", vm.UseOpenLibs, len(got), len(t.Result), got)
				break
			}
			for _, a := range got {
				if !containsAction(t.Result, a) {
					problem = fmt.Errorf("useOpenLibs=%v: unexpected %+v", vm.UseOpenLibs, a)
					break
				}
			}
		}
		report(name, problem)
	}
	for _, t := range at.ActionTests {
		name := fmt.Sprintf("actions/%s/%s", t.Action, t.InputPath)
		report(name, upstreamAction(e, actionsDir, t.Action, t.InputPath, t.ExpectedOutputPath, t.ExpectedErrorMessage, t.Parameters))
	}
	fmt.Fprintf(out, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return fmt.Errorf("%d upstream test(s) failed", failed)
	}
	return nil
}

func containsAction(list []appv1.ResourceAction, a appv1.ResourceAction) bool {
	for _, want := range list {
		if reflect.DeepEqual(want, a) {
			return true
		}
	}
	return false
}

func upstreamAction(e builtin, dir, action, inputPath, outputPath, wantError string, p map[string]string) error {
	source, err := readObject(filepath.Join(dir, inputPath))
	if err != nil {
		return err
	}
	impacted, err := e.action(source, action, params(p))
	if wantError != "" {
		if err == nil || err.Error() != wantError {
			return fmt.Errorf("error %v, want %q", err, wantError)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if len(impacted) != 1 || impacted[0].K8SOperation != argolua.PatchOperation {
		return fmt.Errorf("want one patched object, got %d", len(impacted))
	}
	expected, err := readObject(filepath.Join(dir, outputPath))
	if err != nil {
		return err
	}
	got, err := normalized(impacted[0].UnstructuredObj.Object)
	if err != nil {
		return err
	}
	want, err := normalized(expected.Object)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(got, want) {
		gotJSON, _ := json.Marshal(got)
		wantJSON, _ := json.Marshal(want)
		return fmt.Errorf("output differs:\n got  %s\n want %s", gotJSON, wantJSON)
	}
	return nil
}
