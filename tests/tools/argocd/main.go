// Command argocd-health evaluates Argo CD health checks with Argo CD's own code, the way its controller does.
//
//	argocd-health --argocd-cm argocd-cm.yaml            < objects.json
//	argocd-health --script health.lua --group G --kind K[,K...] < objects.json
//	argocd-health --argocd-cm argocd-cm.yaml --test health_test.yaml
//
// The checks are given as Argo CD reads them: an argocd-cm ConfigMap whose data holds
// resource.customizations.health.<group>_<kind> keys (--argocd-cm), or one script that is put
// under those keys for each kind (--script). The ConfigMap is parsed by Argo CD's settings
// manager (util/settings, over a fake clientset), and each object is evaluated by
// gitops-engine's health.GetResourceHealth with lua.ResourceHealthOverrides (util/lua): the
// controller's path, so the key naming, the override lookup, the restricted gopher-lua library
// set and the health-status validation are all Argo CD's own.
//
// Without --test, a JSON list of objects is read on stdin and a JSON list of
// {"status": ..., "message": ...} is printed, one per object. With --test, an Argo CD
// health_test.yaml (tests: - healthStatus: {status, message} inputPath: testdata/x.yaml, paths
// relative to the file) is run like Argo CD's TestLuaHealthScript: one PASS/FAIL line per test,
// exit 1 if any result differs. A Lua error, or an object no check applies to, exits 1 naming
// the object; bad usage exits 2.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/argoproj/gitops-engine/pkg/health"
	log "github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
)

// result is one object's health; message is always written, even when empty.
type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// healthTest is Argo CD's resource_customizations/<group>/<kind>/health_test.yaml format.
type healthTest struct {
	Tests []struct {
		InputPath    string              `json:"inputPath"`
		HealthStatus health.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

func main() {
	log.SetLevel(log.WarnLevel) // the settings manager logs its informers at info level
	log.SetOutput(os.Stderr)
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("argocd-health", flag.ContinueOnError)
	cmFile := fs.String("argocd-cm", "", "argocd-cm ConfigMap (YAML) holding resource.customizations.health.<group>_<kind> keys")
	script := fs.String("script", "", "a Lua health check, put under resource.customizations.health.<group>_<kind> for each --kind")
	group := fs.String("group", "", "API group of --script's kinds")
	kinds := fs.String("kind", "", "comma-separated kinds --script checks")
	testFile := fs.String("test", "", "an Argo CD health_test.yaml to run instead of reading objects on stdin")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	cm, err := configMap(*cmFile, *script, *group, *kinds)
	if err != nil {
		return err
	}
	overrides, err := resourceOverrides(cm)
	if err != nil {
		return fmt.Errorf("argocd-cm: %w", err)
	}
	if *testFile != "" {
		return runTests(*testFile, overrides, stdout)
	}
	return runObjects(stdin, overrides, stdout)
}

// configMap is the argocd-cm to read the checks from: the file, or one made from --script.
func configMap(cmFile, script, group, kinds string) (*corev1.ConfigMap, error) {
	switch {
	case cmFile != "" && script == "" && group == "" && kinds == "":
		data, err := os.ReadFile(cmFile)
		if err != nil {
			return nil, err
		}
		cm := &corev1.ConfigMap{}
		if err := yaml.UnmarshalStrict(data, cm); err != nil {
			return nil, fmt.Errorf("%s: %w", cmFile, err)
		}
		return cm, nil
	case cmFile == "" && script != "" && kinds != "":
		lua, err := os.ReadFile(script)
		if err != nil {
			return nil, err
		}
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name: "argocd-cm", Namespace: "argocd",
				Labels: map[string]string{"app.kubernetes.io/part-of": "argocd"},
			},
			Data: map[string]string{},
		}
		for _, kind := range strings.Split(kinds, ",") {
			key := kind
			if group != "" {
				key = group + "_" + kind
			}
			cm.Data["resource.customizations.health."+key] = string(lua)
		}
		return cm, nil
	}
	return nil, usageError{errors.New("give either --argocd-cm FILE, or --script FILE --kind K[,K...] [--group G]")}
}

// resourceOverrides parses argocd-cm with Argo CD's settings manager, as the controller does.
func resourceOverrides(cm *corev1.ConfigMap) (lua.ResourceHealthOverrides, error) {
	if cm.Name != "argocd-cm" {
		return nil, fmt.Errorf("the ConfigMap is named %q; Argo CD reads argocd-cm", cm.Name)
	}
	if cm.Namespace == "" {
		cm.Namespace = "argocd"
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr := settings.NewSettingsManager(ctx, fake.NewClientset(cm), cm.Namespace)
	overrides, err := mgr.GetResourceOverrides()
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: Argo CD sees only a ConfigMap labelled app.kubernetes.io/part-of=argocd", err)
	}
	if err != nil {
		return nil, err
	}
	return lua.ResourceHealthOverrides(overrides), nil
}

// evaluate is the controller's call (controller/health.go): gitops-engine's health with the overrides.
func evaluate(obj *unstructured.Unstructured, overrides lua.ResourceHealthOverrides) (*health.HealthStatus, error) {
	status, err := health.GetResourceHealth(obj, overrides)
	if err != nil {
		return nil, err
	}
	if status == nil {
		return nil, fmt.Errorf("no health check applies to %s (argocd-cm key resource.customizations.health.%s)",
			lua.GetConfigMapKey(obj.GroupVersionKind()), strings.Replace(lua.GetConfigMapKey(obj.GroupVersionKind()), "/", "_", 1))
	}
	return status, nil
}

func describe(obj *unstructured.Unstructured) string {
	name := obj.GetName()
	if ns := obj.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return fmt.Sprintf("%s %s", obj.GetKind(), name)
}

func runObjects(stdin io.Reader, overrides lua.ResourceHealthOverrides, stdout io.Writer) error {
	data, err := io.ReadAll(stdin)
	if err != nil {
		return err
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		return fmt.Errorf("stdin must be a JSON list of objects: %w", err)
	}
	results := make([]result, 0, len(raws))
	for i, raw := range raws {
		obj := &unstructured.Unstructured{}
		// as the controller's objects: decoded by apimachinery (integers are int64)
		if err := obj.UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("object %d: %w", i, err)
		}
		status, err := evaluate(obj, overrides)
		if err != nil {
			return fmt.Errorf("object %d (%s): %w", i, describe(obj), err)
		}
		results = append(results, result{Status: string(status.Status), Message: status.Message})
	}
	out, err := json.Marshal(results)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, string(out))
	return err
}

func runTests(testFile string, overrides lua.ResourceHealthOverrides, stdout io.Writer) error {
	data, err := os.ReadFile(testFile)
	if err != nil {
		return err
	}
	var tests healthTest
	if err := yaml.UnmarshalStrict(data, &tests); err != nil {
		return fmt.Errorf("%s: %w", testFile, err)
	}
	if len(tests.Tests) == 0 {
		return fmt.Errorf("%s: no tests", testFile)
	}
	dir := filepath.Dir(testFile)
	failed := 0
	for _, test := range tests.Tests {
		obj, err := readObject(filepath.Join(dir, test.InputPath))
		if err != nil {
			return err
		}
		got, err := evaluate(obj, overrides)
		if err != nil {
			return fmt.Errorf("%s (%s): %w", test.InputPath, describe(obj), err)
		}
		if *got == test.HealthStatus {
			fmt.Fprintf(stdout, "PASS %s: %s %q\n", test.InputPath, got.Status, got.Message)
		} else {
			failed++
			fmt.Fprintf(stdout, "FAIL %s: got %s %q, want %s %q\n", test.InputPath,
				got.Status, got.Message, test.HealthStatus.Status, test.HealthStatus.Message)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%s: %d of %d tests failed", testFile, failed, len(tests.Tests))
	}
	fmt.Fprintf(stdout, "ok %s: %d tests\n", testFile, len(tests.Tests))
	return nil
}

func readObject(path string) (*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	raw, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}
