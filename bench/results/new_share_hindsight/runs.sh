cd /work/main
export PYTHONPATH=/work/exp2/src
mk() { rm -rf $2; mkdir $2; cp -al $1/results $2/; [ -d $1/resources ] && cp -al $1/resources $2/; cp -a $1/.snakemake $2/; }
SM=".venv/bin/snakemake -s /work/exp2/Snakefile --configfile /work/exp2/config.yaml"
run() { name=$1; src=$2; dst=$3; cfg=$4; targets=$5; mk $src $dst; $SM $cfg --directory $dst --cores 2 --touch $targets > /tmp/pfc/${name}_touch.log 2>&1; $SM $cfg --directory $dst --cores 2 --forcerun ensemble $targets > /tmp/pfc/${name}.log 2>&1; echo "$name rc=$?" >> /tmp/pfc/done_ns; }
O="/work/exp2/workflow/presets/omniglot.yaml"; T="results/metrics.json results/submission.csv"
run omni_s1_ns /tmp/omni_s1_f10 /tmp/omni_s1_ns "$O --config seed=1" "$T"
run omni_l_ns /tmp/omni_l_f10 /tmp/omni_l_ns "$O /tmp/omni_local.yaml" "$T"
run dnone_ns /tmp/dnone_f10 /tmp/dnone_ns "/tmp/dnone_override.yaml" "results/metrics.json"
run ddef_ns /tmp/ddef_f10 /tmp/ddef_ns "/tmp/crop0_override.yaml" "results/metrics.json"
echo "rc=all" >> /tmp/pfc/done_ns
