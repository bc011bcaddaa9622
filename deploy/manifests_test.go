package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The subset of the Kubernetes API the manifests use. Decoded strictly
// (decodeStrict): a field the manifests gain must be added here, and a
// misspelt one fails the test. Names follow the API's JSON names.

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []any             `yaml:"matchExpressions"`
}

// intOrString keeps either form as its text.
type intOrString string

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want an int or a string", n.Line)
	}
	*v = intOrString(n.Value)
	return nil
}

type deployment struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		Replicas             *int          `yaml:"replicas"`
		RevisionHistoryLimit *int          `yaml:"revisionHistoryLimit"`
		MinReadySeconds      int           `yaml:"minReadySeconds"`
		Selector             labelSelector `yaml:"selector"`
		Strategy             struct {
			Type          string `yaml:"type"`
			RollingUpdate *struct {
				MaxSurge       intOrString `yaml:"maxSurge"`
				MaxUnavailable intOrString `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     podSpec    `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int              `yaml:"terminationGracePeriodSeconds"`
	AutomountServiceAccountToken  *bool             `yaml:"automountServiceAccountToken"`
	EnableServiceLinks            *bool             `yaml:"enableServiceLinks"`
	ServiceAccountName            string            `yaml:"serviceAccountName"`
	PriorityClassName             string            `yaml:"priorityClassName"`
	NodeSelector                  map[string]string `yaml:"nodeSelector"`
	Affinity                      any               `yaml:"affinity"`
	Tolerations                   []any             `yaml:"tolerations"`
	ImagePullSecrets              []any             `yaml:"imagePullSecrets"`
	SecurityContext               struct {
		RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
		RunAsUser      *int  `yaml:"runAsUser"`
		RunAsGroup     *int  `yaml:"runAsGroup"`
		FSGroup        *int  `yaml:"fsGroup"`
		SeccompProfile *struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []struct {
		MaxSkew           int           `yaml:"maxSkew"`
		TopologyKey       string        `yaml:"topologyKey"`
		WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
		LabelSelector     labelSelector `yaml:"labelSelector"`
	} `yaml:"topologySpreadConstraints"`
	Containers []container `yaml:"containers"`
	Volumes    []volume    `yaml:"volumes"`
}

type container struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Ports           []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	Env       []envVar `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	StartupProbe    *probe `yaml:"startupProbe"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Privileged               *bool `yaml:"privileged"`
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		RunAsUser                *int  `yaml:"runAsUser"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
	Lifecycle any `yaml:"lifecycle"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name     string `yaml:"name"`
			Key      string `yaml:"key"`
			Optional *bool  `yaml:"optional"`
		} `yaml:"secretKeyRef"`
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path   string      `yaml:"path"`
		Port   intOrString `yaml:"port"`
		Scheme string      `yaml:"scheme"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	SuccessThreshold    int `yaml:"successThreshold"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

type keyToPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name        string      `yaml:"name"`
		Items       []keyToPath `yaml:"items"`
		DefaultMode *int        `yaml:"defaultMode"`
		Optional    *bool       `yaml:"optional"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName  string      `yaml:"secretName"`
		Items       []keyToPath `yaml:"items"`
		DefaultMode *int        `yaml:"defaultMode"`
		Optional    *bool       `yaml:"optional"`
	} `yaml:"secret"`
	EmptyDir *struct {
		Medium    string `yaml:"medium"`
		SizeLimit string `yaml:"sizeLimit"`
	} `yaml:"emptyDir"`
}

type configMap struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
}

type secret struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Type       string            `yaml:"type"`
	StringData map[string]string `yaml:"stringData"`
	Data       map[string]string `yaml:"data"`
}

type service struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		Type                     string            `yaml:"type"`
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
			Protocol   string      `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type podDisruptionBudget struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		MinAvailable   *intOrString  `yaml:"minAvailable"`
		MaxUnavailable *intOrString  `yaml:"maxUnavailable"`
		Selector       labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type scaledObject struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		ScaleTargetRef struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Name       string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		PollingInterval *int `yaml:"pollingInterval"`
		CooldownPeriod  *int `yaml:"cooldownPeriod"`
		MinReplicaCount *int `yaml:"minReplicaCount"`
		MaxReplicaCount *int `yaml:"maxReplicaCount"`
		Advanced        any  `yaml:"advanced"`
		Triggers        []struct {
			Type              string            `yaml:"type"`
			Name              string            `yaml:"name"`
			Metadata          map[string]string `yaml:"metadata"`
			AuthenticationRef *struct {
				Name string `yaml:"name"`
				Kind string `yaml:"kind"`
			} `yaml:"authenticationRef"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

type kustomization struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Namespace  string   `yaml:"namespace"`
	Resources  []string `yaml:"resources"`
	Images     []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
		Digest  string `yaml:"digest"`
	} `yaml:"images"`
}

// manifests is every object of deploy/kubernetes, decoded.
type manifests struct {
	deployments   []deployment
	configMaps    []configMap
	secrets       []secret
	services      []service
	pdbs          []podDisruptionBudget
	scaledObjects []scaledObject
	// scaledObjectNodes keeps each ScaledObject's YAML, comments included.
	scaledObjectNodes []*yaml.Node
	// files maps each manifest file (base name) to the kinds it holds.
	files map[string][]string
}

const k8sDir = "kubernetes"

// loadManifests parses every *.yaml of deploy/kubernetes but the
// kustomization, document by document, and decodes each object strictly by
// its kind. An object of a kind this test does not know fails it.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ms := &manifests{files: map[string][]string{}}
	for _, path := range paths {
		base := filepath.Base(path)
		if base == "kustomization.yaml" {
			continue
		}
		docs := yamlDocs(t, path)
		if len(docs) == 0 {
			t.Errorf("%s: no object", path)
		}
		for i, doc := range docs {
			var head struct {
				APIVersion string     `yaml:"apiVersion"`
				Kind       string     `yaml:"kind"`
				Metadata   objectMeta `yaml:"metadata"`
			}
			if err := doc.Decode(&head); err != nil {
				t.Fatalf("%s, document %d: %v", path, i+1, err)
			}
			if head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
				t.Errorf("%s, document %d: apiVersion, kind and metadata.name are required", path, i+1)
			}
			if head.Metadata.Namespace != "" {
				t.Errorf("%s: %s/%s sets a namespace; the manifests go to the namespace of kubectl -n", path, head.Kind, head.Metadata.Name)
			}
			where := fmt.Sprintf("%s (%s/%s)", path, head.Kind, head.Metadata.Name)
			ms.files[base] = append(ms.files[base], head.Kind)
			var err error
			switch head.APIVersion + " " + head.Kind {
			case "apps/v1 Deployment":
				var d deployment
				err = decodeStrict(doc, &d)
				ms.deployments = append(ms.deployments, d)
			case "v1 ConfigMap":
				var c configMap
				err = decodeStrict(doc, &c)
				ms.configMaps = append(ms.configMaps, c)
			case "v1 Secret":
				var s secret
				err = decodeStrict(doc, &s)
				ms.secrets = append(ms.secrets, s)
			case "v1 Service":
				var s service
				err = decodeStrict(doc, &s)
				ms.services = append(ms.services, s)
			case "policy/v1 PodDisruptionBudget":
				var p podDisruptionBudget
				err = decodeStrict(doc, &p)
				ms.pdbs = append(ms.pdbs, p)
			case "keda.sh/v1alpha1 ScaledObject":
				var s scaledObject
				err = decodeStrict(doc, &s)
				ms.scaledObjects = append(ms.scaledObjects, s)
				ms.scaledObjectNodes = append(ms.scaledObjectNodes, doc)
			default:
				t.Errorf("%s: %s %s is not a kind this test knows; add it to manifests_test.go", where, head.APIVersion, head.Kind)
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", where, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return ms
}

// one returns the single element of xs, failing the test otherwise.
func one[T any](t *testing.T, what string, xs []T) T {
	t.Helper()
	if len(xs) != 1 {
		t.Fatalf("want exactly one %s in %s/, found %d", what, k8sDir, len(xs))
	}
	return xs[0]
}

// TestKustomizationListsEveryManifest: kustomization.yaml names every
// manifest of the directory except the Secret example (placeholders, never
// applied), every file it names exists, and its image override is the
// Deployment's image.
func TestKustomizationListsEveryManifest(t *testing.T) {
	ms := loadManifests(t)
	docs := yamlDocs(t, filepath.Join(k8sDir, "kustomization.yaml"))
	k := one(t, "kustomization document", docs)
	var kz kustomization
	if err := decodeStrict(k, &kz); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if kz.APIVersion != "kustomize.config.k8s.io/v1beta1" || kz.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: apiVersion/kind %s %s", kz.APIVersion, kz.Kind)
	}
	listed := map[string]bool{}
	for _, r := range kz.Resources {
		listed[r] = true
		if _, err := os.Stat(filepath.Join(k8sDir, r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
	var files []string
	for f := range ms.files {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		example := strings.Contains(f, ".example.")
		switch {
		case example && listed[f]:
			t.Errorf("kustomization.yaml applies %s: an example with placeholder values must not be applied", f)
		case !example && !listed[f]:
			t.Errorf("%s is not listed in kustomization.yaml's resources", f)
		}
	}
	d := one(t, "Deployment", ms.deployments)
	images := map[string]bool{}
	for _, c := range d.Spec.Template.Spec.Containers {
		images[c.Image] = true
	}
	for _, im := range kz.Images {
		if !images[im.Name] {
			t.Errorf("kustomization.yaml: images[].name %q is no container's image (%v): the override would not apply", im.Name, images)
		}
	}
}

// TestSecretExampleHoldsPlaceholders: the example Secret never carries a
// real value.
func TestSecretExampleHoldsPlaceholders(t *testing.T) {
	ms := loadManifests(t)
	s := one(t, "Secret", ms.secrets)
	if len(s.Data) > 0 {
		t.Errorf("Secret %s: data (base64) is not allowed in the example; use stringData placeholders", s.Metadata.Name)
	}
	if len(s.StringData) == 0 {
		t.Errorf("Secret %s: no stringData", s.Metadata.Name)
	}
	for k, v := range s.StringData {
		if !strings.HasPrefix(v, "PLACEHOLDER") {
			t.Errorf("Secret %s: key %s: value %q does not start with PLACEHOLDER: the example must hold no secret", s.Metadata.Name, k, v)
		}
	}
}
