# ImageNet init, as the papers' models start from an ImageNet-trained
# backbone: add to model.backbone
#   init_cfg=dict(type='Pretrained', checkpoint='torchvision://mobilenet_v2')
# (fetched once into torch hub's cache and converted on load; left out
# so that the config runs offline as written).
_base_ = [
    '../_base_/models/ssdlite_mobilenetv2.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/det_sgd-cosine_120e.py',
    '../_base_/default_runtime_det.py',
]

# SSD's augmentation (mmdet's SSDLite recipe): zoom out, IoU-constrained
# crop, resize to the square input, flip, photometric distortion.
input_size = _base_.input_size
data_preprocessor = _base_.model.data_preprocessor
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean=data_preprocessor.mean, to_rgb=data_preprocessor.bgr_to_rgb,
         ratio_range=(1, 4)),
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5), hue_delta=18),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
