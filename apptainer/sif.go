package apptainer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/apptainer/sif/v2/pkg/sif"
)

// Labels a module image may carry so that the image alone defines the
// module (set them in a def file's %labels). Paths are inside the image.
const (
	LabelModule      = "org.scalebox.module"      // suggested module name
	LabelDescription = "org.scalebox.description" // one line for listings
	LabelRun         = "org.scalebox.run"         // run.sh to use
	LabelCheck       = "org.scalebox.check"       // check.sh
	LabelSetup       = "org.scalebox.setup"       // setup.sh
	LabelTeardown    = "org.scalebox.teardown"    // teardown.sh
	LabelMaxSeconds  = "org.scalebox.task_max_seconds"
	LabelEnvPrefix   = "org.scalebox.env." // org.scalebox.env.NAME = default value
)

// Metadata is what a SIF says about itself.
type Metadata struct {
	Path   string            `json:"path"`
	Labels map[string]string `json:"labels"`
	// Deffile is the definition file the image was built from.
	Deffile string `json:"deffile,omitempty"`
	Arch    string `json:"arch,omitempty"`
	// The scalebox labels, decoded.
	Module      string            `json:"module,omitempty"`
	Description string            `json:"description,omitempty"`
	Scripts     map[string]string `json:"scripts,omitempty"` // run.sh -> path in the image
	Env         map[string]string `json:"env,omitempty"`
	MaxSeconds  int               `json:"task_max_seconds,omitempty"`
	// Problems are labels that could not be used.
	Problems []string `json:"problems,omitempty"`
}

// ErrNotSIF says a file is not a SIF image (a sandbox directory or another
// format): it has no labels to read.
var ErrNotSIF = errors.New("not a SIF image")

// Inspect reads the labels and def file of a SIF image.
func Inspect(path string) (*Metadata, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("inspect image: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("inspect image %s: %w (a sandbox directory)", path, ErrNotSIF)
	}
	fi, err := sif.LoadContainerFromPath(path, sif.OptLoadWithFlag(os.O_RDONLY))
	if err != nil {
		return nil, fmt.Errorf("inspect image %s: %w: %v", path, ErrNotSIF, err)
	}
	defer fi.UnloadContainer()
	md := &Metadata{Path: path, Labels: map[string]string{}}
	if d, err := fi.GetDescriptor(sif.WithPartitionType(sif.PartPrimSys)); err == nil {
		if _, _, arch, err := d.PartitionMetadata(); err == nil {
			md.Arch = arch
		}
	}
	if d, err := fi.GetDescriptor(sif.WithDataType(sif.DataDeffile)); err == nil {
		if b, err := d.GetData(); err == nil {
			md.Deffile = string(b)
		}
	}
	// Apptainer writes labels into a generic JSON object
	// (data.attributes.labels); older builders used a labels object.
	if ds, err := fi.GetDescriptors(sif.WithDataType(sif.DataGenericJSON)); err == nil {
		for _, d := range ds {
			b, err := d.GetData()
			if err != nil {
				continue
			}
			var doc struct {
				Data struct {
					Attributes struct {
						Labels map[string]string `json:"labels"`
					} `json:"attributes"`
				} `json:"data"`
			}
			if json.Unmarshal(b, &doc) == nil {
				for k, v := range doc.Data.Attributes.Labels {
					md.Labels[k] = v
				}
			}
		}
	}
	if ds, err := fi.GetDescriptors(sif.WithDataType(sif.DataLabels)); err == nil {
		for _, d := range ds {
			if b, err := d.GetData(); err == nil {
				var labels map[string]string
				if json.Unmarshal(b, &labels) == nil {
					for k, v := range labels {
						md.Labels[k] = v
					}
				}
			}
		}
	}
	md.decode()
	return md, nil
}

func (md *Metadata) decode() {
	md.Module = md.Labels[LabelModule]
	md.Description = md.Labels[LabelDescription]
	for label, script := range map[string]string{LabelRun: "run.sh", LabelCheck: "check.sh", LabelSetup: "setup.sh", LabelTeardown: "teardown.sh"} {
		v := md.Labels[label]
		if v == "" {
			continue
		}
		if !strings.HasPrefix(v, "/") {
			md.Problems = append(md.Problems, fmt.Sprintf("label %s=%q: want an absolute path inside the image", label, v))
			continue
		}
		if md.Scripts == nil {
			md.Scripts = map[string]string{}
		}
		md.Scripts[script] = v
	}
	if v := md.Labels[LabelMaxSeconds]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			md.Problems = append(md.Problems, fmt.Sprintf("label %s=%q: want a whole number of seconds", LabelMaxSeconds, v))
		} else {
			md.MaxSeconds = n
		}
	}
	for k, v := range md.Labels {
		if name, ok := strings.CutPrefix(k, LabelEnvPrefix); ok {
			if name == "" || strings.ContainsAny(name, "= \t") {
				md.Problems = append(md.Problems, fmt.Sprintf("label %s: not a variable name", k))
				continue
			}
			if md.Env == nil {
				md.Env = map[string]string{}
			}
			md.Env[name] = v
		}
	}
	sort.Strings(md.Problems)
}
