# COCO 2017 in mmdet's usual layout under data_root:
#   annotations/instances_{train,val}2017.json, train2017/, val2017/
# The pipelines depend on the model's input size and normalisation, so the
# detector configs set them (train_pipeline / test_pipeline).
# mbn_backbones.CocoDataset is mmdet's CocoDataset that first checks the
# annotation file and each image's header (verify_images='header': 0.1-0.7 ms
# an image on COCO128, 10-90 s for train2017's 118k images); 'full' decodes
# every image and so finds truncated files (3-4.5 ms an image: 6-9 minutes).
dataset_type = 'mbn_backbones.CocoDataset'
data_root = 'data/coco/'
backend_args = None

train_dataloader = dict(
    batch_size=24,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    # SSD's recipes repeat the dataset so that an "epoch" (and the
    # checkpoint and validation intervals counted in epochs) is 5 passes.
    dataset=dict(
        type='RepeatDataset',
        times=5,
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            backend_args=backend_args)))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
