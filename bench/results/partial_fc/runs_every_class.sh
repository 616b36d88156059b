cd /work/main
while ! grep -q "rc=all" /tmp/pfc/done 2>/dev/null; do sleep 10; done
export PYTHONPATH=/work/exp/src
mk() { rm -rf $2; mkdir $2; cp -al $1/results $2/; [ -d $1/resources ] && cp -al $1/resources $2/; cp -a $1/.snakemake $2/; }
SM=".venv/bin/snakemake -s /work/exp/Snakefile --configfile /work/exp/config.yaml"
run() { name=$1; src=$2; dst=$3; old=$4; new=$5; cfg=$6; targets=$7; mk $src $dst; $SM $old $cfg --directory $dst --cores 2 --touch $targets > /tmp/pfc/${name}_touch.log 2>&1; /usr/bin/time -v $SM $new $cfg --directory $dst --cores 2 $targets > /tmp/pfc/${name}.log 2>&1; echo "$name rc=$?" >> /tmp/pfc/done0; }
O="/work/exp/workflow/presets/omniglot.yaml"; T="results/metrics.json results/submission.csv"
run omni_s1_p0 /tmp/omni_s1_f10 /tmp/omni_s1_p0 "$O" "$O /tmp/pfc/p0.yaml" "--config seed=1" "$T"
run ddef_p0 /tmp/ddef_f10 /tmp/ddef_p0 "/tmp/crop0_override.yaml" "/tmp/crop0_override.yaml /tmp/pfc/demo0.yaml" "" "results/metrics.json"
run dnone_p0 /tmp/dnone_f10 /tmp/dnone_p0 "/tmp/dnone_override.yaml" "/tmp/dnone_override.yaml /tmp/pfc/demo0.yaml" "" "results/metrics.json"
echo "rc=all" >> /tmp/pfc/done0
